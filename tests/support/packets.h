// Ethernet frames for the network backend tests: big-endian field access,
// the Internet checksum (RFC 1071), and IPv4/UDP datagrams built with both
// checksums complete or parsed back.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace flint::testing {

using Mac = std::array<uint8_t, 6>;

inline void Put16(std::vector<uint8_t>& v, size_t at, uint16_t x) {
  v[at] = static_cast<uint8_t>(x >> 8);
  v[at + 1] = static_cast<uint8_t>(x);
}
inline uint16_t Get16(const std::vector<uint8_t>& v, size_t at) {
  return static_cast<uint16_t>((v[at] << 8) | v[at + 1]);
}
inline void Put32(std::vector<uint8_t>& v, size_t at, uint32_t x) {
  for (int i = 0; i < 4; ++i) v[at + i] = static_cast<uint8_t>(x >> (24 - 8 * i));
}
inline uint32_t Get32(const std::vector<uint8_t>& v, size_t at) {
  return (uint32_t{v[at]} << 24) | (uint32_t{v[at + 1]} << 16) | (uint32_t{v[at + 2]} << 8) |
         v[at + 3];
}

// `sum` plus the big-endian 16-bit words of `data` (an odd last byte is the
// high half of a word), not yet folded.
inline uint32_t Sum16(const uint8_t* data, size_t len, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < len; i += 2) sum += (uint32_t{data[i]} << 8) | data[i + 1];
  if (len & 1) sum += uint32_t{data[len - 1]} << 8;
  return sum;
}
// Folds a sum to 16 bits and complements it: the value a checksum field
// holds, and 0 when a received header or datagram verifies.
inline uint16_t Fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}
inline uint16_t Checksum(const uint8_t* data, size_t len, uint32_t sum = 0) {
  return Fold(Sum16(data, len, sum));
}

// Ethernet + IPv4 (20-byte header, TTL 64) + UDP, both checksums complete.
// Addresses in host order.
inline std::vector<uint8_t> UdpFrame(const Mac& src_mac, const Mac& dst_mac, uint32_t src_ip,
                                     uint32_t dst_ip, uint16_t sport, uint16_t dport,
                                     const std::vector<uint8_t>& payload) {
  const size_t udp_len = 8 + payload.size();
  std::vector<uint8_t> f(14 + 20 + udp_len);
  std::copy(dst_mac.begin(), dst_mac.end(), f.begin());
  std::copy(src_mac.begin(), src_mac.end(), f.begin() + 6);
  Put16(f, 12, 0x0800);
  f[14] = 0x45;
  Put16(f, 16, static_cast<uint16_t>(20 + udp_len));
  f[22] = 64;  // TTL
  f[23] = 17;  // UDP
  Put32(f, 26, src_ip);
  Put32(f, 30, dst_ip);
  Put16(f, 24, Checksum(f.data() + 14, 20));
  Put16(f, 34, sport);
  Put16(f, 36, dport);
  Put16(f, 38, static_cast<uint16_t>(udp_len));
  std::copy(payload.begin(), payload.end(), f.begin() + 42);
  // Pseudo-header: addresses, protocol, UDP length.
  const uint32_t pseudo = Sum16(f.data() + 26, 8) + 17 + static_cast<uint32_t>(udp_len);
  const uint16_t c = Checksum(f.data() + 34, udp_len, pseudo);
  Put16(f, 40, c == 0 ? 0xffff : c);  // 0 would mean "no checksum"
  return f;
}

struct Udp {
  Mac src_mac;
  uint32_t src_ip, dst_ip;
  uint16_t sport, dport;
  std::vector<uint8_t> payload;
};

// The UDP datagram in Ethernet frame `f` (IPv4, any header length), or
// nothing when `f` is not one.
inline std::optional<Udp> ParseUdp(const std::vector<uint8_t>& f) {
  if (f.size() < 42 || Get16(f, 12) != 0x0800 || (f[14] >> 4) != 4 || f[23] != 17) {
    return std::nullopt;
  }
  const size_t ihl = (f[14] & 0xf) * 4u;
  if (f.size() < 14 + ihl + 8) return std::nullopt;
  const size_t u = 14 + ihl;
  const size_t ulen = Get16(f, u + 4);
  if (ulen < 8 || f.size() < u + ulen) return std::nullopt;
  Udp r;
  std::copy(f.begin() + 6, f.begin() + 12, r.src_mac.begin());
  r.src_ip = Get32(f, 26);
  r.dst_ip = Get32(f, 30);
  r.sport = Get16(f, u);
  r.dport = Get16(f, u + 2);
  r.payload.assign(f.begin() + u + 8, f.begin() + u + ulen);
  return r;
}

}  // namespace flint::testing
