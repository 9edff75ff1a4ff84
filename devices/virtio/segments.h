// Byte ranges over a descriptor chain's segments: the one way virtio
// devices copy to and from guest buffers and build iovecs on them. Each
// segment was checked against guest RAM when the chain was popped; callers
// check that the run holds the bytes they ask for.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "devices/virtio/queue.h"

namespace flint::virtio {

// Calls fn(host, n) for each piece of the bytes [skip, skip + len) of a run
// of segments.
template <typename Fn>
void ForEachPiece(std::span<const Segment> segs, uint64_t skip, uint64_t len, Fn&& fn) {
  for (const Segment& s : segs) {
    if (len == 0) return;
    if (skip >= s.len) {
      skip -= s.len;
      continue;
    }
    const uint64_t n = std::min<uint64_t>(s.len - skip, len);
    fn(s.host + skip, n);
    len -= n;
    skip = 0;
  }
}

inline void CopyFromSegments(std::span<const Segment> segs, uint64_t skip, void* dst,
                             uint64_t len) {
  auto* out = static_cast<uint8_t*>(dst);
  ForEachPiece(segs, skip, len, [&](const uint8_t* p, uint64_t n) {
    std::memcpy(out, p, n);
    out += n;
  });
}

inline void CopyToSegments(std::span<const Segment> segs, const uint8_t* src, uint64_t len) {
  ForEachPiece(segs, 0, len, [&](uint8_t* p, uint64_t n) {
    std::memcpy(p, src, n);
    src += n;
  });
}

// The same byte range as iovecs on guest memory, appended to *out.
inline void GatherSegments(std::span<const Segment> segs, uint64_t skip, uint64_t len,
                           std::vector<iovec>* out) {
  ForEachPiece(segs, skip, len, [&](uint8_t* p, uint64_t n) { out->push_back(iovec{p, n}); });
}

}  // namespace flint::virtio
