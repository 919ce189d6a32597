// EXPECT_ERROR(statement, "substring"): the statement throws smoe::Error whose
// one-line message contains the substring.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

#define EXPECT_ERROR(statement, substring)                                          \
  do {                                                                              \
    try {                                                                           \
      statement;                                                                    \
      ADD_FAILURE() << "expected smoe::Error containing \"" << (substring) << "\""; \
    } catch (const ::smoe::Error& e) {                                              \
      std::string what = e.what();                                                  \
      EXPECT_NE(what.find(substring), std::string::npos) << "message: " << what;    \
      EXPECT_EQ(what.find('\n'), std::string::npos) << "not one line: " << what;    \
    }                                                                               \
  } while (0)
