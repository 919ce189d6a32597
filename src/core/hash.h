// SHA-256 checksums (OpenSSL) for shards, checkpoints and manifests.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace smoe {

// Lower-case hex SHA-256 of a byte range.
std::string sha256_hex(const void* data, size_t size);
inline std::string sha256_hex(std::string_view bytes) { return sha256_hex(bytes.data(), bytes.size()); }

// Lower-case hex SHA-256 of a file's contents; throws smoe::Error naming the file.
std::string sha256_file(const std::string& path);

}  // namespace smoe
