#include "devices/virtio/net_rx_filter.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace flint::virtio {

void NetRxFilter::Reset() {
  modes_ = 1u << kPromisc;
  unicast_.clear();
  multicast_.clear();
  unicast_overflow_ = multicast_overflow_ = false;
}

bool NetRxFilter::SetMode(uint8_t mode, bool on) {
  if (mode > kNobcast) return false;
  const uint8_t bit = static_cast<uint8_t>(1u << mode);
  modes_ = on ? (modes_ | bit) : (modes_ & static_cast<uint8_t>(~bit));
  return true;
}

void NetRxFilter::SetTables(std::span<const MacAddress> unicast,
                            std::span<const MacAddress> multicast) {
  auto keep = [](std::span<const MacAddress> from, std::vector<MacAddress>* to, bool* overflow) {
    *overflow = from.size() > kMaxEntries;
    to->clear();
    if (!*overflow) to->assign(from.begin(), from.end());
  };
  keep(unicast, &unicast_, &unicast_overflow_);
  keep(multicast, &multicast_, &multicast_overflow_);
}

bool NetRxFilter::Contains(const std::vector<MacAddress>& table, const uint8_t* dst) {
  for (const MacAddress& m : table) {
    if (std::memcmp(m.data(), dst, 6) == 0) return true;
  }
  return false;
}

bool NetRxFilter::Accept(const uint8_t* dst) const {
  if (mode(kPromisc)) return true;
  if ((dst[0] & 1) != 0) {  // group address
    static constexpr uint8_t kBroadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    if (std::memcmp(dst, kBroadcast, 6) == 0) return !mode(kNobcast);
    if (mode(kNomulti)) return false;
    return mode(kAllmulti) || multicast_overflow_ || Contains(multicast_, dst);
  }
  if (mode(kNouni)) return false;
  return mode(kAlluni) || unicast_overflow_ || std::memcmp(dst, own_.data(), 6) == 0 ||
         Contains(unicast_, dst);
}

std::string NetRxFilter::ModeString(uint8_t modes) {
  static constexpr const char* kNames[] = {"promisc", "allmulti", "alluni",
                                           "nomulti", "nouni",    "nobcast"};
  std::vector<const char*> on;
  for (uint8_t m = 0; m <= kNobcast; ++m) {
    if (modes & (1u << m)) on.push_back(kNames[m]);
  }
  return on.empty() ? "-" : absl::StrJoin(on, ",");
}

std::string NetRxFilter::TableString(uint32_t unicast_entries, uint32_t multicast_entries) {
  auto one = [](uint32_t n) {
    return n == kOverflowed ? std::string("overflow") : absl::StrCat(n);
  };
  return absl::StrCat(one(unicast_entries), "/", one(multicast_entries));
}

}  // namespace flint::virtio
