// Looking into a program's captured output, for the end-to-end tests.
#pragma once

#include <cstddef>
#include <string>

namespace flint::testing {

inline bool Has(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

// Non-overlapping occurrences of `needle` (non-empty) in `hay`.
inline size_t CountOf(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + needle.size())) {
    ++n;
  }
  return n;
}

}  // namespace flint::testing
