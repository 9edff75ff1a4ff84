// NetRxFilter: which destination addresses pass for each RX mode and table.
#include "devices/virtio/net_rx_filter.h"

#include <gtest/gtest.h>

#include <vector>

namespace flint::virtio {
namespace {

constexpr MacAddress kOwn = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
constexpr MacAddress kOther = {0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc};
constexpr MacAddress kExtraUnicast = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
constexpr MacAddress kBroadcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
constexpr MacAddress kGroupA = {0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb};  // mDNS
constexpr MacAddress kGroupB = {0x33, 0x33, 0x00, 0x00, 0x00, 0x01};  // IPv6 all-nodes

class NetRxFilterTest : public ::testing::Test {
 protected:
  NetRxFilterTest() {
    f_.set_own_mac(kOwn);
    f_.SetMode(NetRxFilter::kPromisc, false);
  }
  bool Accepts(const MacAddress& dst) const { return f_.Accept(dst.data()); }
  NetRxFilter f_;
};

TEST(NetRxFilter, StartsPromiscuous) {
  NetRxFilter f;
  f.set_own_mac(kOwn);
  EXPECT_TRUE(f.mode(NetRxFilter::kPromisc));
  for (const MacAddress& m : {kOwn, kOther, kBroadcast, kGroupA}) EXPECT_TRUE(f.Accept(m.data()));
  EXPECT_EQ(NetRxFilter::ModeString(f.modes()), "promisc");
}

TEST_F(NetRxFilterTest, DefaultAfterPromiscOffIsOwnAddressAndBroadcast) {
  EXPECT_TRUE(Accepts(kOwn));
  EXPECT_TRUE(Accepts(kBroadcast));
  EXPECT_FALSE(Accepts(kOther));
  EXPECT_FALSE(Accepts(kGroupA));
  EXPECT_EQ(NetRxFilter::ModeString(f_.modes()), "-");
}

TEST_F(NetRxFilterTest, PromiscOverridesEveryNoSwitch) {
  for (uint8_t m : {NetRxFilter::kNomulti, NetRxFilter::kNouni, NetRxFilter::kNobcast}) {
    ASSERT_TRUE(f_.SetMode(m, true));
  }
  EXPECT_FALSE(Accepts(kOwn));
  EXPECT_FALSE(Accepts(kBroadcast));
  EXPECT_FALSE(Accepts(kGroupA));
  f_.SetMode(NetRxFilter::kPromisc, true);
  for (const MacAddress& m : {kOwn, kOther, kBroadcast, kGroupA}) EXPECT_TRUE(Accepts(m));
}

TEST_F(NetRxFilterTest, MulticastByTableAllmultiOrOverflow) {
  const std::vector<MacAddress> groups = {kGroupA};
  f_.SetTables({}, groups);
  EXPECT_TRUE(Accepts(kGroupA));
  EXPECT_FALSE(Accepts(kGroupB));
  EXPECT_EQ(NetRxFilter::TableString(f_.unicast_entries(), f_.multicast_entries()), "0/1");

  f_.SetMode(NetRxFilter::kAllmulti, true);
  EXPECT_TRUE(Accepts(kGroupB));
  EXPECT_FALSE(Accepts(kOther));  // allmulti says nothing about unicast
  f_.SetMode(NetRxFilter::kNomulti, true);
  EXPECT_FALSE(Accepts(kGroupA));  // nomulti wins over table and allmulti
  EXPECT_TRUE(Accepts(kBroadcast));  // broadcast is its own switch
  f_.SetMode(NetRxFilter::kNomulti, false);
  f_.SetMode(NetRxFilter::kAllmulti, false);

  std::vector<MacAddress> many(NetRxFilter::kMaxEntries + 1, kGroupA);
  f_.SetTables({}, many);
  EXPECT_TRUE(Accepts(kGroupB));  // overflowed: every group address
  EXPECT_FALSE(Accepts(kOther));
  EXPECT_EQ(NetRxFilter::TableString(f_.unicast_entries(), f_.multicast_entries()),
            "0/overflow");
  f_.SetTables({}, {});
  EXPECT_FALSE(Accepts(kGroupA));  // a new table replaces the old one
}

TEST_F(NetRxFilterTest, UnicastByOwnAddressTableAlluniOrOverflow) {
  const std::vector<MacAddress> extra = {kExtraUnicast};
  f_.SetTables(extra, {});
  EXPECT_TRUE(Accepts(kExtraUnicast));
  EXPECT_TRUE(Accepts(kOwn));
  EXPECT_FALSE(Accepts(kOther));
  f_.SetMode(NetRxFilter::kAlluni, true);
  EXPECT_TRUE(Accepts(kOther));
  EXPECT_FALSE(Accepts(kGroupA));
  f_.SetMode(NetRxFilter::kNouni, true);
  EXPECT_FALSE(Accepts(kOwn));  // nouni: no unicast at all
  EXPECT_TRUE(Accepts(kBroadcast));
  f_.SetMode(NetRxFilter::kNouni, false);
  f_.SetMode(NetRxFilter::kAlluni, false);

  std::vector<MacAddress> many(NetRxFilter::kMaxEntries + 1, kExtraUnicast);
  f_.SetTables(many, {});
  EXPECT_TRUE(Accepts(kOther));
  f_.set_own_mac(kOther);  // MAC_ADDR_SET moves the own address
  f_.SetTables({}, {});
  EXPECT_TRUE(Accepts(kOther));
  EXPECT_FALSE(Accepts(kOwn));
}

TEST_F(NetRxFilterTest, NobcastAndUnknownModes) {
  f_.SetMode(NetRxFilter::kNobcast, true);
  EXPECT_FALSE(Accepts(kBroadcast));
  EXPECT_TRUE(Accepts(kOwn));
  EXPECT_FALSE(f_.SetMode(6, true));
  EXPECT_EQ(NetRxFilter::ModeString(f_.modes()), "nobcast");
  f_.Reset();
  EXPECT_TRUE(f_.mode(NetRxFilter::kPromisc));
  EXPECT_FALSE(f_.mode(NetRxFilter::kNobcast));
  EXPECT_EQ(f_.own_mac(), kOwn);  // Reset keeps the address (the device sets it)
}

}  // namespace
}  // namespace flint::virtio
