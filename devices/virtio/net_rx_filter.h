// Receive filtering for virtio-net (virtio 1.2 §5.1.6.5.1 and .2): which
// frames reach the guest, by destination MAC, as its driver asked through
// the control queue (RX mode commands and MAC_TABLE_SET).
//
// Rules, in order:
//  - promiscuous: every frame;
//  - broadcast (ff:ff:ff:ff:ff:ff): unless NOBCAST;
//  - other multicast: never with NOMULTI; else with ALLMULTI, when the
//    address is in the multicast table, or when that table overflowed;
//  - unicast: never with NOUNI; else with ALLUNI, when the address is the
//    NIC's own, is in the unicast table, or when that table overflowed.
// A table the driver fills with more than kMaxEntries addresses "overflows":
// all addresses of that kind pass (a superset of what was asked, as a
// hardware NIC with a small filter does).
//
// State after Reset(): promiscuous on, everything else off, tables empty,
// so a driver that never sends a command (or did not negotiate CTRL_RX)
// receives everything. Single-threaded (the device's event loop).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace flint::virtio {

using MacAddress = std::array<uint8_t, 6>;

class NetRxFilter {
 public:
  static constexpr size_t kMaxEntries = 64;  // per table
  // The RX-mode switches, numbered as the control commands (§5.1.6.5.1).
  enum Mode : uint8_t {
    kPromisc = 0,
    kAllmulti = 1,
    kAlluni = 2,
    kNomulti = 3,
    kNouni = 4,
    kNobcast = 5,
  };

  NetRxFilter() { Reset(); }

  void Reset();
  // The NIC's own address (the configured one, or MAC_ADDR_SET's).
  void set_own_mac(const MacAddress& mac) { own_ = mac; }
  const MacAddress& own_mac() const { return own_; }
  // Switches mode `mode` (0..5) on or off; false for an unknown mode.
  bool SetMode(uint8_t mode, bool on);
  bool mode(Mode m) const { return (modes_ & (1u << m)) != 0; }
  uint8_t modes() const { return modes_; }
  // Replaces both tables (6-byte addresses, back to back).
  void SetTables(std::span<const MacAddress> unicast, std::span<const MacAddress> multicast);

  // Whether a frame whose first six bytes are `dst` is delivered.
  bool Accept(const uint8_t* dst) const;

  // Table sizes for statistics: entries kept, or kOverflowed.
  static constexpr uint32_t kOverflowed = 0xffff;
  uint32_t unicast_entries() const {
    return unicast_overflow_ ? kOverflowed : static_cast<uint32_t>(unicast_.size());
  }
  uint32_t multicast_entries() const {
    return multicast_overflow_ ? kOverflowed : static_cast<uint32_t>(multicast_.size());
  }

  // For statistics: "promisc,allmulti" ("-" when none) from modes(), and
  // "U/M" from the entry counts ("overflow" for kOverflowed).
  static std::string ModeString(uint8_t modes);
  static std::string TableString(uint32_t unicast_entries, uint32_t multicast_entries);

 private:
  static bool Contains(const std::vector<MacAddress>& table, const uint8_t* dst);

  MacAddress own_{};
  uint8_t modes_ = 0;
  std::vector<MacAddress> unicast_;
  std::vector<MacAddress> multicast_;
  bool unicast_overflow_ = false;
  bool multicast_overflow_ = false;
};

}  // namespace flint::virtio
