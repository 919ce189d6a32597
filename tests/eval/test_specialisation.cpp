#include <gtest/gtest.h>
#include <torch/torch.h>

#include "eval/specialisation.h"

namespace smoe::eval {
namespace {

TEST(Metrics, EntropiesAndMutualInformationByHand) {
  // Two experts, two classes; the gate is one-hot and follows the class exactly.
  at::Tensor gate = torch::tensor({{1.0, 0.0}, {1.0, 0.0}, {0.0, 1.0}, {0.0, 1.0}});
  at::Tensor labels = torch::tensor({0, 0, 1, 1}, torch::kLong);
  auto s = specialisation(gate, labels, 2);
  EXPECT_NEAR(s.gate_entropy, 0.0, 1e-12);        // sparse
  EXPECT_NEAR(s.usage_entropy, 1.0, 1e-12);       // balanced: 1 bit
  EXPECT_NEAR(s.mutual_information, 1.0, 1e-12);  // I(E;Y) = H(Y) = 1 bit
  // A uniform gate that picks expert 0 for everyone: maximal sample entropy, no information.
  at::Tensor uniform = torch::full({4, 2}, 0.5);
  auto u = specialisation(uniform, labels, 2);
  EXPECT_NEAR(u.gate_entropy, 1.0, 1e-12);
  EXPECT_NEAR(u.usage_entropy, 1.0, 1e-12);
  EXPECT_NEAR(u.mutual_information, 0.0, 1e-12);
  at::Tensor table = routing_table(gate.argmax(1), labels, 2, 2);
  EXPECT_TRUE(torch::equal(table, torch::tensor({{2, 0}, {0, 2}}, torch::kLong)));
}

}  // namespace
}  // namespace smoe::eval
