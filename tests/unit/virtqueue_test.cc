#include "devices/virtio/queue.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "vmm/guest_memory.h"

namespace flint::virtio {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint16_t kNext = 1, kWrite = 2, kIndirect = 4;

// A driver's view of one split queue in real guest memory, written by hand
// the way a guest would: descriptor table at 0x1000, available ring at
// 0x2000, used ring at 0x3000, buffers from 0x10000.
class Driver {
 public:
  static constexpr uint64_t kDesc = 0x1000, kAvail = 0x2000, kUsed = 0x3000;

  explicit Driver(uint16_t size = 8, std::vector<MemoryRegionSpec> regions = {{0, kMiB}})
      : size_(size) {
    auto m = GuestMemory::Create(std::move(regions));
    EXPECT_TRUE(m.ok()) << m.status();
    mem_ = std::move(*m);
  }

  absl::StatusOr<SplitQueue> MakeQueue(uint64_t features = 0) {
    return SplitQueue::Create(mem_, {.size = size_, .desc = kDesc, .avail = kAvail, .used = kUsed},
                              features);
  }

  void Desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags = 0, uint16_t next = 0) {
    WriteDesc(kDesc + 16ull * i, addr, len, flags, next);
  }
  void WriteDesc(uint64_t at, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
    ASSERT_TRUE(mem_.WriteObj(at, addr).ok());
    ASSERT_TRUE(mem_.WriteObj(at + 8, len).ok());
    ASSERT_TRUE(mem_.WriteObj(at + 12, flags).ok());
    ASSERT_TRUE(mem_.WriteObj(at + 14, next).ok());
  }
  // Makes `head` available and publishes the new avail->idx.
  void Publish(uint16_t head) {
    ASSERT_TRUE(mem_.WriteObj<uint16_t>(kAvail + 4 + 2ull * (avail_idx_ % size_), head).ok());
    ++avail_idx_;
    SetAvailIdx(avail_idx_);
  }
  void SetAvailIdx(uint16_t idx) { ASSERT_TRUE(mem_.WriteObj(kAvail + 2, idx).ok()); }
  void SetAvailFlags(uint16_t f) { ASSERT_TRUE(mem_.WriteObj(kAvail, f).ok()); }
  void SetUsedEvent(uint16_t v) { ASSERT_TRUE(mem_.WriteObj(kAvail + 4 + 2ull * size_, v).ok()); }

  uint16_t UsedFlags() { return *mem_.ReadObj<uint16_t>(kUsed); }
  uint16_t UsedIdx() { return *mem_.ReadObj<uint16_t>(kUsed + 2); }
  uint32_t UsedId(uint16_t i) { return *mem_.ReadObj<uint32_t>(kUsed + 4 + 8ull * i); }
  uint32_t UsedLen(uint16_t i) { return *mem_.ReadObj<uint32_t>(kUsed + 8 + 8ull * i); }
  uint16_t AvailEvent() { return *mem_.ReadObj<uint16_t>(kUsed + 4 + 8ull * size_); }

  const GuestMemory& mem() const { return mem_; }

 private:
  GuestMemory mem_;
  uint16_t size_;
  uint16_t avail_idx_ = 0;
};

TEST(Virtqueue, PopsASimpleChainThenReportsEmpty) {
  Driver d;
  auto q = d.MakeQueue();
  ASSERT_TRUE(q.ok()) << q.status();
  DescriptorChain c;
  auto r = q->Pop(&c);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);

  d.Desc(3, 0x10000, 512);
  d.Publish(3);
  r = q->Pop(&c);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(*r);
  EXPECT_EQ(c.head, 3);
  ASSERT_EQ(c.segments.size(), 1u);
  EXPECT_EQ(c.segments[0].gpa, 0x10000u);
  EXPECT_EQ(c.segments[0].len, 512u);
  EXPECT_FALSE(c.segments[0].device_writable);
  EXPECT_EQ(c.segments[0].host, d.mem().Slice(0x10000, 512)->data());
  EXPECT_EQ(c.total_len, 512u);

  r = q->Pop(&c);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
  EXPECT_FALSE(q->broken());
}

TEST(Virtqueue, ReadableThenWritableSegmentsInChainOrder) {
  Driver d;
  auto q = d.MakeQueue();
  ASSERT_TRUE(q.ok());
  // 5 -> 0 -> 7, out of table order on purpose.
  d.Desc(5, 0x10000, 16, kNext, 0);
  d.Desc(0, 0x20000, 4096, kNext | kWrite, 7);
  d.Desc(7, 0x30000, 1, kWrite);
  d.Publish(5);
  DescriptorChain c;
  auto r = q->Pop(&c);
  ASSERT_TRUE(r.ok() && *r) << r.status();
  EXPECT_EQ(c.head, 5);
  ASSERT_EQ(c.segments.size(), 3u);
  EXPECT_EQ(c.segments[0].gpa, 0x10000u);
  EXPECT_FALSE(c.segments[0].device_writable);
  EXPECT_EQ(c.segments[1].gpa, 0x20000u);
  EXPECT_TRUE(c.segments[1].device_writable);
  EXPECT_EQ(c.segments[2].gpa, 0x30000u);
  EXPECT_EQ(c.segments[2].len, 1u);
  EXPECT_TRUE(c.segments[2].device_writable);
  EXPECT_EQ(c.total_len, 16u + 4096u + 1u);
}

TEST(Virtqueue, FollowsAnIndirectTable) {
  Driver d;
  auto q = d.MakeQueue(kFeatureIndirectDesc);
  ASSERT_TRUE(q.ok());
  constexpr uint64_t kTable = 0x8000;
  // Table entries 0 -> 2 -> 1.
  d.WriteDesc(kTable + 0, 0x10000, 16, kNext, 2);
  d.WriteDesc(kTable + 32, 0x11000, 100, kNext, 1);
  d.WriteDesc(kTable + 16, 0x12000, 1, kWrite, 0);
  // The WRITE flag on the descriptor that names the table is ignored.
  d.Desc(2, kTable, 48, kIndirect | kWrite);
  d.Publish(2);
  DescriptorChain c;
  auto r = q->Pop(&c);
  ASSERT_TRUE(r.ok() && *r) << r.status();
  EXPECT_EQ(c.head, 2);
  ASSERT_EQ(c.segments.size(), 3u);
  EXPECT_EQ(c.segments[0].gpa, 0x10000u);
  EXPECT_EQ(c.segments[1].gpa, 0x11000u);
  EXPECT_FALSE(c.segments[1].device_writable);
  EXPECT_EQ(c.segments[2].gpa, 0x12000u);
  EXPECT_TRUE(c.segments[2].device_writable);
  EXPECT_EQ(c.total_len, 117u);
}

TEST(Virtqueue, DirectDescriptorsMayLeadIntoAnIndirectTable) {
  Driver d;
  auto q = d.MakeQueue(kFeatureIndirectDesc);
  ASSERT_TRUE(q.ok());
  d.WriteDesc(0x8000, 0x12000, 8, kWrite, 0);
  d.Desc(0, 0x10000, 16, kNext, 1);
  d.Desc(1, 0x8000, 16, kIndirect);
  d.Publish(0);
  DescriptorChain c;
  auto r = q->Pop(&c);
  ASSERT_TRUE(r.ok() && *r) << r.status();
  ASSERT_EQ(c.segments.size(), 2u);
  EXPECT_EQ(c.segments[1].gpa, 0x12000u);
}

TEST(Virtqueue, AcceptsChainsAsLongAsTheQueueOrTable) {
  // The loop guards must not be off by one: a chain may use every descriptor.
  Driver d;
  auto q = d.MakeQueue(kFeatureIndirectDesc);
  ASSERT_TRUE(q.ok());
  for (uint16_t i = 0; i < 8; ++i) d.Desc(i, 0x10000 + i, 1, i < 7 ? kNext : 0, i + 1);
  d.Publish(0);
  DescriptorChain c;
  auto r = q->Pop(&c);
  ASSERT_TRUE(r.ok() && *r) << r.status();
  EXPECT_EQ(c.segments.size(), 8u);
  EXPECT_EQ(c.segments[7].gpa, 0x10007u);

  for (uint64_t i = 0; i < 4; ++i) {
    d.WriteDesc(0x8000 + 16 * i, 0x20000, 1, i < 3 ? kNext : 0, static_cast<uint16_t>(i + 1));
  }
  d.Desc(0, 0x8000, 64, kIndirect);
  d.Publish(0);
  r = q->Pop(&c);
  ASSERT_TRUE(r.ok() && *r) << r.status();
  EXPECT_EQ(c.segments.size(), 4u);
}

struct BadRing {
  const char* name;
  uint64_t features;
  std::function<void(Driver&)> setup;
};

// Every guest error the header lists: each must fail Pop and break the queue.
TEST(Virtqueue, RejectsHostileChainsAndBreaks) {
  constexpr uint64_t kInd = kFeatureIndirectDesc;
  const std::vector<BadRing> cases = {
      {"loop", 0,
       [](Driver& d) {
         d.Desc(0, 0x10000, 8, kNext, 1);
         d.Desc(1, 0x10000, 8, kNext, 0);
         d.Publish(0);
       }},
      {"chain through every descriptor and back (longer than the queue)", 0,
       [](Driver& d) {
         for (uint16_t i = 0; i < 8; ++i) d.Desc(i, 0x10000, 8, kNext, (i + 1) % 8);
         d.Publish(0);
       }},
      {"head out of range", 0,
       [](Driver& d) {
         d.Desc(0, 0x10000, 8);
         d.Publish(8);
       }},
      {"next out of range", 0,
       [](Driver& d) {
         d.Desc(0, 0x10000, 8, kNext, 8);
         d.Publish(0);
       }},
      {"indirect without the feature", 0,
       [](Driver& d) {
         d.WriteDesc(0x8000, 0x10000, 8, 0, 0);
         d.Desc(0, 0x8000, 16, kIndirect);
         d.Publish(0);
       }},
      {"nested indirect", kInd,
       [](Driver& d) {
         d.WriteDesc(0x8000, 0x9000, 16, kIndirect, 0);
         d.WriteDesc(0x9000, 0x10000, 8, 0, 0);
         d.Desc(0, 0x8000, 16, kIndirect);
         d.Publish(0);
       }},
      {"indirect with NEXT", kInd,
       [](Driver& d) {
         d.WriteDesc(0x8000, 0x10000, 8, 0, 0);
         d.Desc(0, 0x8000, 16, kIndirect | kNext, 1);
         d.Desc(1, 0x10000, 8);
         d.Publish(0);
       }},
      {"indirect length not a multiple of 16", kInd,
       [](Driver& d) {
         d.WriteDesc(0x8000, 0x10000, 8, 0, 0);
         d.Desc(0, 0x8000, 24, kIndirect);
         d.Publish(0);
       }},
      {"indirect length zero", kInd,
       [](Driver& d) {
         d.Desc(0, 0x8000, 0, kIndirect);
         d.Publish(0);
       }},
      {"indirect table outside RAM", kInd,
       [](Driver& d) {
         d.Desc(0, kMiB - 16, 32, kIndirect);
         d.Publish(0);
       }},
      {"indirect loop", kInd,
       [](Driver& d) {
         d.WriteDesc(0x8000, 0x10000, 8, kNext, 1);
         d.WriteDesc(0x8010, 0x10000, 8, kNext, 0);
         d.Desc(0, 0x8000, 32, kIndirect);
         d.Publish(0);
       }},
      {"indirect next out of range", kInd,
       [](Driver& d) {
         // Entry 2 exists in memory but lies past the table's length.
         d.WriteDesc(0x8000, 0x10000, 8, kNext, 2);
         d.WriteDesc(0x8020, 0x10000, 8, 0, 0);
         d.Desc(0, 0x8000, 32, kIndirect);
         d.Publish(0);
       }},
      {"zero-length buffer", 0,
       [](Driver& d) {
         d.Desc(0, 0x10000, 0);
         d.Publish(0);
       }},
      {"zero-length buffer inside an indirect table", kInd,
       [](Driver& d) {
         d.WriteDesc(0x8000, 0x10000, 0, 0, 0);
         d.Desc(0, 0x8000, 16, kIndirect);
         d.Publish(0);
       }},
      {"buffer outside RAM", 0,
       [](Driver& d) {
         d.Desc(0, 2 * kMiB, 8);
         d.Publish(0);
       }},
      {"buffer running off the end of RAM", 0,
       [](Driver& d) {
         d.Desc(0, kMiB - 4, 8);
         d.Publish(0);
       }},
      {"buffer wrapping the address space", 0,
       [](Driver& d) {
         d.Desc(0, ~0ull - 3, 16);
         d.Publish(0);
       }},
      {"readable after writable", 0,
       [](Driver& d) {
         d.Desc(0, 0x10000, 8, kNext | kWrite, 1);
         d.Desc(1, 0x11000, 8);
         d.Publish(0);
       }},
      {"readable after writable across an indirect table", kInd,
       [](Driver& d) {
         d.WriteDesc(0x8000, 0x11000, 8, 0, 0);
         d.Desc(0, 0x10000, 8, kNext | kWrite, 1);
         d.Desc(1, 0x8000, 16, kIndirect);
         d.Publish(0);
       }},
      {"avail idx more than size ahead", 0,
       [](Driver& d) {
         d.Desc(0, 0x10000, 8);
         d.SetAvailIdx(9);
       }},
  };
  for (const BadRing& bad : cases) {
    SCOPED_TRACE(bad.name);
    Driver d;
    bad.setup(d);
    auto q = d.MakeQueue(bad.features);
    ASSERT_TRUE(q.ok());
    DescriptorChain c;
    auto r = q->Pop(&c);
    EXPECT_FALSE(r.ok());
    EXPECT_TRUE(q->broken());
    // Broken for good: nothing else works until the device is reset.
    EXPECT_FALSE(q->Pop(&c).ok());
    EXPECT_FALSE(q->AddUsed(0, 0).ok());
    EXPECT_FALSE(q->EnableNotification().ok());
    EXPECT_FALSE(q->ShouldNotify());
    EXPECT_EQ(d.UsedIdx(), 0);
  }
}

TEST(Virtqueue, RejectsABufferStraddlingTwoRegions) {
  // Adjacent regions are still two RAM regions: a segment must sit in one.
  Driver d(8, {{0, kMiB}, {kMiB, kMiB}});
  d.Desc(0, kMiB - 8, 16);
  d.Publish(0);
  auto q = d.MakeQueue();
  ASSERT_TRUE(q.ok());
  DescriptorChain c;
  EXPECT_FALSE(q->Pop(&c).ok());
  EXPECT_TRUE(q->broken());
}

TEST(Virtqueue, RejectsChainsOf4GiBOrMore) {
  // Two 2 GiB buffers over the same (never touched) memory: 4 GiB in total.
  constexpr uint64_t k2GiB = 2048 * kMiB;
  Driver d(8, {{0, k2GiB + kMiB}});
  d.Desc(0, kMiB, static_cast<uint32_t>(k2GiB), kNext, 1);
  d.Desc(1, kMiB, static_cast<uint32_t>(k2GiB - 1), kWrite);
  d.Desc(2, kMiB, static_cast<uint32_t>(k2GiB), kNext, 3);
  d.Desc(3, kMiB, static_cast<uint32_t>(k2GiB), kWrite);
  d.Publish(0);
  d.Publish(2);
  auto q = d.MakeQueue();
  ASSERT_TRUE(q.ok());
  DescriptorChain c;
  auto r = q->Pop(&c);  // 4 GiB - 1: allowed
  ASSERT_TRUE(r.ok() && *r) << r.status();
  EXPECT_EQ(c.total_len, 2 * k2GiB - 1);
  EXPECT_FALSE(q->Pop(&c).ok());
  EXPECT_TRUE(q->broken());
}

TEST(Virtqueue, CreateChecksLayout) {
  Driver d;
  const GuestMemory& m = d.mem();
  auto make = [&](uint16_t size, uint64_t desc, uint64_t avail, uint64_t used) {
    return SplitQueue::Create(m, {.size = size, .desc = desc, .avail = avail, .used = used}, 0)
        .ok();
  };
  EXPECT_TRUE(make(8, 0x1000, 0x2000, 0x3000));
  EXPECT_TRUE(make(8, 0x1010, 0x2002, 0x3004));  // minimum alignments
  EXPECT_FALSE(make(0, 0x1000, 0x2000, 0x3000));
  EXPECT_FALSE(make(12, 0x1000, 0x2000, 0x3000));  // not a power of two
  EXPECT_FALSE(make(8, 0x1008, 0x2000, 0x3000));
  EXPECT_FALSE(make(8, 0x1000, 0x2001, 0x3000));
  EXPECT_FALSE(make(8, 0x1000, 0x2000, 0x3002));
  EXPECT_FALSE(make(8, kMiB - 64, 0x2000, 0x3000));     // 128-byte table runs off RAM
  EXPECT_FALSE(make(8, 0x1000, kMiB - 20, 0x3000));     // 22-byte ring runs off RAM
  EXPECT_FALSE(make(8, 0x1000, 0x2000, kMiB - 68));     // 70-byte ring runs off RAM
  EXPECT_FALSE(make(8, 0x1000, 0x2000, 8 * kMiB));
  EXPECT_TRUE(make(32768, 0x10000, 0x90000, 0xa1000));
}

TEST(Virtqueue, AddUsedFillsTheUsedRing) {
  Driver d;
  auto q = d.MakeQueue();
  ASSERT_TRUE(q.ok());
  d.Desc(1, 0x10000, 8, kWrite);
  d.Desc(4, 0x11000, 8, kWrite);
  d.Publish(1);
  d.Publish(4);
  DescriptorChain a, b;
  ASSERT_TRUE(*q->Pop(&a));
  ASSERT_TRUE(*q->Pop(&b));
  // Completion out of order is allowed.
  ASSERT_TRUE(q->AddUsed(b.head, 7).ok());
  EXPECT_EQ(d.UsedIdx(), 1);
  ASSERT_TRUE(q->AddUsed(a.head, 3).ok());
  EXPECT_EQ(d.UsedIdx(), 2);
  EXPECT_EQ(d.UsedId(0), 4u);
  EXPECT_EQ(d.UsedLen(0), 7u);
  EXPECT_EQ(d.UsedId(1), 1u);
  EXPECT_EQ(d.UsedLen(1), 3u);

  EXPECT_FALSE(q->AddUsed(8, 0).ok());
  EXPECT_TRUE(q->broken());
  EXPECT_EQ(d.UsedIdx(), 2);
}

// A device handing several chains over at once (merged rx buffers) writes
// them all before the driver may see any.
TEST(Virtqueue, UnpublishedUsedEntriesStayInvisibleUntilPublished) {
  Driver d;
  auto q = d.MakeQueue();
  ASSERT_TRUE(q.ok());
  d.Desc(1, 0x10000, 8, kWrite);
  d.Desc(2, 0x11000, 8, kWrite);
  d.Desc(3, 0x12000, 8, kWrite);
  d.Publish(1);
  d.Publish(2);
  d.Publish(3);
  DescriptorChain a, b, c;
  ASSERT_TRUE(*q->Pop(&a) && *q->Pop(&b) && *q->Pop(&c));
  ASSERT_TRUE(q->AddUsed(a.head, 8, /*publish=*/false).ok());
  ASSERT_TRUE(q->AddUsed(b.head, 8, /*publish=*/false).ok());
  EXPECT_EQ(d.UsedIdx(), 0) << "entries leaked out before the batch was complete";
  ASSERT_TRUE(q->AddUsed(c.head, 5).ok());
  EXPECT_EQ(d.UsedIdx(), 3);
  EXPECT_EQ(d.UsedId(0), 1u);
  EXPECT_EQ(d.UsedId(2), 3u);
  EXPECT_EQ(d.UsedLen(2), 5u);
}

TEST(Virtqueue, IndexesWrapAround) {
  Driver d(2);
  auto q = d.MakeQueue();
  ASSERT_TRUE(q.ok());
  d.Desc(0, 0x10000, 8);
  DescriptorChain c;
  // 70000 round trips wrap both 16-bit indexes.
  for (int i = 0; i < 70000; ++i) {
    d.Publish(0);
    auto r = q->Pop(&c);
    ASSERT_TRUE(r.ok() && *r) << i << ": " << r.status();
    ASSERT_TRUE(q->AddUsed(c.head, 0).ok());
  }
  EXPECT_EQ(d.UsedIdx(), static_cast<uint16_t>(70000));
}

TEST(Virtqueue, ShouldNotifyWithoutEventIdxFollowsTheAvailFlag) {
  Driver d;
  auto q = d.MakeQueue();
  ASSERT_TRUE(q.ok());
  d.Desc(0, 0x10000, 8);
  d.Publish(0);
  DescriptorChain c;
  ASSERT_TRUE(*q->Pop(&c));
  ASSERT_TRUE(q->AddUsed(0, 0).ok());
  EXPECT_TRUE(q->ShouldNotify());
  d.SetAvailFlags(1);  // VIRTQ_AVAIL_F_NO_INTERRUPT
  EXPECT_FALSE(q->ShouldNotify());
  d.SetAvailFlags(0);
  EXPECT_TRUE(q->ShouldNotify());
}

TEST(Virtqueue, ShouldNotifyWithEventIdxFiresWhenUsedEventIsCrossed) {
  Driver d;
  auto q = d.MakeQueue(kFeatureEventIdx);
  ASSERT_TRUE(q.ok());
  d.SetAvailFlags(1);  // ignored under EVENT_IDX
  d.Desc(0, 0x10000, 8);
  DescriptorChain c;
  auto complete = [&] {
    d.Publish(0);
    ASSERT_TRUE(*q->Pop(&c));
    ASSERT_TRUE(q->AddUsed(0, 0).ok());
  };
  complete();              // used idx 1
  d.SetUsedEvent(0);
  EXPECT_TRUE(q->ShouldNotify());   // 0 -> 1 crosses used_event 0 (and it is the first)
  EXPECT_FALSE(q->ShouldNotify());  // nothing new since the last decision
  d.SetUsedEvent(3);
  complete();              // used idx 2
  EXPECT_FALSE(q->ShouldNotify());  // 1 -> 2 does not reach entry 3
  complete();              // 3
  EXPECT_FALSE(q->ShouldNotify());
  complete();              // 4: entry 3 was used
  EXPECT_TRUE(q->ShouldNotify());
  complete();              // 5
  complete();              // 6
  d.SetUsedEvent(3);       // used before the last decision (at 4): no second interrupt
  EXPECT_FALSE(q->ShouldNotify());
  d.SetUsedEvent(6);       // 6 is not used yet (idx 6 means entries 0..5)
  complete();              // 7
  EXPECT_TRUE(q->ShouldNotify());
}

TEST(Virtqueue, FirstShouldNotifyWithEventIdxAlwaysFires) {
  Driver d;
  auto q = d.MakeQueue(kFeatureEventIdx);
  ASSERT_TRUE(q.ok());
  d.SetUsedEvent(100);
  d.Desc(0, 0x10000, 8);
  d.Publish(0);
  DescriptorChain c;
  ASSERT_TRUE(*q->Pop(&c));
  ASSERT_TRUE(q->AddUsed(0, 0).ok());
  EXPECT_TRUE(q->ShouldNotify());
}

TEST(Virtqueue, DisableAndEnableNotificationWithoutEventIdx) {
  Driver d;
  auto q = d.MakeQueue();
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(d.UsedFlags(), 0);
  q->DisableNotification();
  EXPECT_EQ(d.UsedFlags(), 1);  // VIRTQ_USED_F_NO_NOTIFY
  auto r = q->EnableNotification();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
  EXPECT_EQ(d.UsedFlags(), 0);

  q->DisableNotification();
  d.Desc(0, 0x10000, 8);
  d.Publish(0);  // arrives while suppressed
  r = q->EnableNotification();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(*r);  // the caller must pop again
}

TEST(Virtqueue, DisableAndEnableNotificationWithEventIdx) {
  Driver d;
  auto q = d.MakeQueue(kFeatureEventIdx);
  ASSERT_TRUE(q.ok());
  d.Desc(0, 0x10000, 8);
  d.Publish(0);
  DescriptorChain c;
  ASSERT_TRUE(*q->Pop(&c));
  EXPECT_EQ(d.AvailEvent(), 1);  // notify me when entry 1 arrives
  EXPECT_EQ(d.UsedFlags(), 0);

  q->DisableNotification();
  d.Publish(0);
  ASSERT_TRUE(*q->Pop(&c));
  EXPECT_EQ(d.AvailEvent(), 1);  // not advanced while disabled
  EXPECT_EQ(d.UsedFlags(), 0);   // the flag is not used under EVENT_IDX

  auto r = q->EnableNotification();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
  EXPECT_EQ(d.AvailEvent(), 2);

  q->DisableNotification();
  d.Publish(0);
  r = q->EnableNotification();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(*r);
  EXPECT_EQ(d.AvailEvent(), 2);
  ASSERT_TRUE(*q->Pop(&c));
  EXPECT_EQ(d.AvailEvent(), 3);
}

TEST(Virtqueue, EnableNotificationChecksTheAvailIndex) {
  Driver d;
  auto q = d.MakeQueue();
  ASSERT_TRUE(q.ok());
  d.SetAvailIdx(100);
  EXPECT_FALSE(q->EnableNotification().ok());
  EXPECT_TRUE(q->broken());
}

TEST(Virtqueue, PopReusesTheSegmentStorage) {
  Driver d;
  auto q = d.MakeQueue();
  ASSERT_TRUE(q.ok());
  d.Desc(0, 0x10000, 8, kNext, 1);
  d.Desc(1, 0x11000, 8, kNext, 2);
  d.Desc(2, 0x12000, 8, kWrite);
  d.Desc(3, 0x13000, 8, kWrite);
  d.Publish(0);
  d.Publish(3);
  DescriptorChain c;
  ASSERT_TRUE(*q->Pop(&c));
  ASSERT_EQ(c.segments.size(), 3u);
  const Segment* storage = c.segments.data();
  ASSERT_TRUE(*q->Pop(&c));
  ASSERT_EQ(c.segments.size(), 1u);
  EXPECT_EQ(c.segments.data(), storage);  // same buffer: no allocation
  EXPECT_EQ(c.segments[0].gpa, 0x13000u);
  EXPECT_EQ(c.total_len, 8u);
}

TEST(Virtqueue, MovedQueueKeepsItsPosition) {
  Driver d;
  auto q = d.MakeQueue();
  ASSERT_TRUE(q.ok());
  d.Desc(0, 0x10000, 8);
  d.Publish(0);
  DescriptorChain c;
  ASSERT_TRUE(*q->Pop(&c));
  SplitQueue moved = std::move(*q);
  d.Publish(0);
  auto r = moved.Pop(&c);
  ASSERT_TRUE(r.ok() && *r);
  r = moved.Pop(&c);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
}

}  // namespace
}  // namespace flint::virtio
