// The test guest image (tests/guest: flint-guest.elf), embedded in flint:
// what `flint run` boots when no --kernel is given. The definition is
// generated at build time by tests/guest/embed.py.
#pragma once

#include <cstdint>
#include <span>

namespace flint {

std::span<const uint8_t> EmbeddedGuestImage();

}  // namespace flint
