#include "devices/virtio/blk.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "devices/virtio/segments.h"

namespace flint::virtio {

// Headers, config space and discard segments are little-endian; flint runs on
// x86-64 only, so they are copied as they are.
static_assert(std::endian::native == std::endian::little);

namespace {

constexpr uint64_t kSector = 512;
constexpr uint64_t kHeaderSize = 16;    // le32 type, le32 reserved, le64 sector
constexpr uint64_t kRangeSegSize = 16;  // le64 sector, le32 num_sectors, le32 flags
constexpr uint32_t kMaxRangeSegs = 1;   // max_discard_seg, max_write_zeroes_seg
// O_DIRECT needs aligned buffers; a request whose guest buffers are not goes
// through one aligned bounce buffer of its whole length. The guest controls
// that length, so it is capped per request (larger ones fail with IOERR) and
// per queue (popping pauses while a queue holds more than the budget minus
// one request's worth).
constexpr uint64_t kMaxBounce = 8ull << 20;
constexpr uint64_t kBounceBudget = 32ull << 20;

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

template <typename T>
void Put(uint8_t* config, uint32_t offset, T value) {
  std::memcpy(config + offset, &value, sizeof(T));
}


void CopyToIov(const std::vector<iovec>& iov, const uint8_t* src) {
  for (const iovec& v : iov) {
    std::memcpy(v.iov_base, src, v.iov_len);
    src += v.iov_len;
  }
}

void BumpMax(std::atomic<uint64_t>& max, uint64_t value) {
  uint64_t seen = max.load(std::memory_order_relaxed);
  while (value > seen && !max.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
  }
}

}  // namespace

// One request handed to the engine; its index in Queue::slots is the tag.
struct VirtioBlk::Request {
  uint16_t head = 0;
  uint32_t type = 0;
  uint8_t* status = nullptr;  // the chain's last byte, in guest memory
  uint64_t data_len = 0;
  // O_DIRECT bounce: the aligned buffer the engine used, and for IN the
  // guest buffers it is copied into when the read completes.
  std::unique_ptr<uint8_t, FreeDeleter> bounce;
  uint64_t bounce_len = 0;
  std::vector<iovec> guest_iov;
};

struct VirtioBlk::Queue {
  uint16_t index = 0;
  std::unique_ptr<block::Engine> engine;  // lives as long as the device
  // Set by Activate, cleared by Reset.
  SplitQueue* ring = nullptr;
  int notify_fd = -1;
  bool watching = false;       // notify and completion fds are on the loop
  std::vector<Request> slots;  // as many as the ring has entries
  std::vector<uint32_t> free_slots;
  DescriptorChain chain;    // Pop() target, reused
  std::vector<iovec> iov;   // scratch for one op's buffers
  bool stalled = false;     // stopped popping for room; completions resume
  bool used_added = false;  // AddUsed since the last interrupt decision
  uint64_t bounce_bytes = 0;
};

VirtioBlk::VirtioBlk(const DiskConfig& config, block::DiskFile disk)
    : serial_(config.serial.substr(0, kMaxDiskSerial)),
      disk_(std::move(disk)),
      capacity_sectors_(disk_.size() / kSector) {}

VirtioBlk::~VirtioBlk() { StopServing(); }

absl::StatusOr<std::unique_ptr<VirtioBlk>> VirtioBlk::Create(const DiskConfig& config,
                                                             IoEngine engine) {
  if (config.queues == 0 || config.queues > kMaxDiskQueues) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queues=%u must be between 1 and %u", config.queues, kMaxDiskQueues));
  }
  absl::StatusOr<block::DiskFile> disk =
      block::DiskFile::Open(config.path, config.readonly, config.direct);
  if (!disk.ok()) return disk.status();
  std::unique_ptr<VirtioBlk> blk(new VirtioBlk(config, std::move(*disk)));

  // Every queue gets its own engine, all of one kind. Under kAuto a queue
  // whose ring fails after the first one worked (each ring costs fds and
  // locked memory) sends the whole disk to the thread pool, with that
  // queue's reason.
  const block::EngineOptions options{.fd = blk->disk_.fd(), .queue_depth = kBlkMaxQueueSize};
  auto make_all = [&](IoEngine requested) -> absl::Status {
    blk->queues_.clear();
    for (uint16_t i = 0; i < config.queues; ++i) {
      // After a first queue on the thread pool, the others need not try io_uring.
      const IoEngine want =
          i > 0 && blk->engine_kind_ == IoEngine::kThreads ? IoEngine::kThreads : requested;
      absl::StatusOr<block::MadeEngine> made = block::MakeEngine(want, options);
      if (!made.ok()) return made.status();
      if (i == 0) {
        blk->engine_kind_ = made->kind;
        blk->engine_note_ = made->fallback_reason;
      } else if (made->kind != blk->engine_kind_) {
        return absl::UnavailableError(made->fallback_reason);
      }
      auto q = std::make_unique<Queue>();
      q->index = i;
      q->engine = std::move(made->engine);
      blk->queues_.push_back(std::move(q));
    }
    return absl::OkStatus();
  };
  absl::Status s = make_all(engine);
  if (!s.ok() && engine == IoEngine::kAuto && blk->engine_kind_ == IoEngine::kIoUring) {
    const std::string why(s.message());
    s = make_all(IoEngine::kThreads);
    blk->engine_note_ = why;
  }
  if (!s.ok()) return s;

  const bool ro = config.readonly;
  const uint32_t lbs = blk->disk_.logical_block_size();
  blk->features_ = kBlkFeatureSizeMax | kBlkFeatureSegMax | kBlkFeatureBlkSize | kBlkFeatureFlush;
  if (ro) blk->features_ |= kBlkFeatureRo;
  if (config.queues > 1) blk->features_ |= kBlkFeatureMq;
  if (!ro) blk->features_ |= kBlkFeatureDiscard | kBlkFeatureWriteZeroes;

  uint8_t* c = blk->config_;
  Put<uint64_t>(c, kBlkCfgCapacity, blk->capacity_sectors_);
  Put<uint32_t>(c, kBlkCfgSizeMax, kBlkSizeMax);
  Put<uint32_t>(c, kBlkCfgSegMax, kBlkSegMax);
  Put<uint32_t>(c, kBlkCfgBlkSize, lbs);
  Put<uint16_t>(c, kBlkCfgNumQueues, config.queues);
  if (!ro) {
    Put<uint32_t>(c, kBlkCfgMaxDiscardSectors, kBlkMaxDiscardSectors);
    Put<uint32_t>(c, kBlkCfgMaxDiscardSeg, kMaxRangeSegs);
    Put<uint32_t>(c, kBlkCfgDiscardSectorAlignment, lbs / kSector);
    Put<uint32_t>(c, kBlkCfgMaxWriteZeroesSectors, kBlkMaxWriteZeroesSectors);
    Put<uint32_t>(c, kBlkCfgMaxWriteZeroesSeg, kMaxRangeSegs);
    c[kBlkCfgWriteZeroesMayUnmap] = 1;
  }
  return blk;
}

const char* VirtioBlk::engine_name() const { return block::EngineName(engine_kind_); }

std::string VirtioBlk::engine_note() const {
  if (engine_note_.empty()) return "";
  return absl::StrFormat("io_uring unavailable (%s): disk I/O uses the thread pool", engine_note_);
}

void VirtioBlk::ReadConfig(uint32_t offset, std::span<uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t at = uint64_t{offset} + i;
    data[i] = at < kBlkConfigSize ? config_[at] : 0;
  }
}

void VirtioBlk::WriteConfig(uint32_t, std::span<const uint8_t>) {
  // Every field is read-only to the driver (no CONFIG_WCE): writes are dropped.
}

absl::Status VirtioBlk::Activate(const ActivateContext& ctx) {
  if (active_) return absl::FailedPreconditionError("virtio-blk is already active");
  if (ctx.loop == nullptr || ctx.interrupts == nullptr) {
    return absl::InvalidArgumentError("virtio-blk activation needs an event loop and interrupts");
  }
  for (const ActiveQueue& aq : ctx.queues) {
    if (aq.index >= queues_.size() || aq.queue == nullptr || aq.notify_fd < 0 ||
        queues_[aq.index]->ring != nullptr) {
      for (auto& q : queues_) q->ring = nullptr;
      return absl::InvalidArgumentError(absl::StrFormat(
          "virtio-blk cannot serve queue %u (it has %u)", aq.index, queues_.size()));
    }
    Queue& q = *queues_[aq.index];
    q.ring = aq.queue;
    q.notify_fd = aq.notify_fd;
    const uint16_t size = aq.queue->size();
    q.slots.resize(size);
    q.free_slots.clear();
    for (uint32_t i = size; i > 0; --i) q.free_slots.push_back(i - 1);
    q.iov.reserve(kBlkSegMax);
  }
  loop_ = ctx.loop;
  interrupts_ = ctx.interrupts;
  driver_features_ = ctx.features;
  failed_ = false;
  active_ = true;
  for (auto& qp : queues_) {
    Queue* q = qp.get();
    if (q->ring == nullptr) continue;
    absl::Status s = loop_->Add(q->notify_fd, [this, q] { OnNotify(*q); });
    if (s.ok()) {
      s = loop_->Add(q->engine->completion_fd(), [this, q] { OnCompletions(*q); });
      if (!s.ok()) loop_->Remove(q->notify_fd);
    }
    if (!s.ok()) {
      StopServing();
      return s;
    }
    q->watching = true;
  }
  return absl::OkStatus();
}

void VirtioBlk::Reset() {
  StopServing();
  failed_ = false;
}

void VirtioBlk::StopServing() {
  if (!active_) return;
  // Off the loop first (each Remove waits for a running callback), then wait
  // for the disk: afterwards nothing touches guest memory or the rings.
  for (auto& q : queues_) {
    if (!q->watching) continue;
    loop_->Remove(q->notify_fd);
    loop_->Remove(q->engine->completion_fd());
    q->watching = false;
  }
  for (auto& q : queues_) {
    q->engine->Drain();
    q->slots.clear();
    q->free_slots.clear();
    q->ring = nullptr;
    q->notify_fd = -1;
    q->stalled = false;
    q->used_added = false;
    q->bounce_bytes = 0;
  }
  in_flight_ = 0;
  active_ = false;
  loop_ = nullptr;
  interrupts_ = nullptr;
}

void VirtioBlk::Fail(const std::string& why) {
  if (failed_) return;
  failed_ = true;
  interrupts_->NeedsReset(why);
}

void VirtioBlk::OnNotify(Queue& q) {
  uint64_t count;
  ssize_t n = read(q.notify_fd, &count, sizeof(count));
  (void)n;  // readable, so it cannot block; the value is only "kicked"
  if (failed_) return;
  ProcessQueue(q);
}

void VirtioBlk::ProcessQueue(Queue& q) {
  // At most one ring's worth of chains per call. A guest that refills the
  // ring as fast as the device empties it (requests that complete at once
  // need no free slot) would otherwise keep the loop thread here, away from
  // every other queue and device and from RunSync (a reset).
  uint32_t budget = q.ring->size();
  for (;;) {
    q.ring->DisableNotification();
    bool room = true;
    bool yield = false;
    for (;;) {
      if (q.free_slots.empty() || q.bounce_bytes > kBounceBudget - kMaxBounce) {
        room = false;
        break;
      }
      absl::StatusOr<bool> popped = q.ring->Pop(&q.chain);
      if (!popped.ok()) {
        Fail(absl::StrFormat("virtio-blk queue %u: %s", q.index, popped.status().message()));
        return;
      }
      if (!*popped) break;
      StartRequest(q, q.chain);
      if (failed_) return;
      if (--budget == 0) {
        yield = true;
        break;
      }
    }
    if (absl::Status s = q.engine->Submit(); !s.ok()) {
      Fail(absl::StrFormat("virtio-blk queue %u: disk I/O submission failed: %s", q.index,
                           s.message()));
      return;
    }
    SignalIfNeeded(q);
    if (failed_) return;
    if (!room) {
      // Notifications stay off: the next completion frees room and pops again.
      q.stalled = true;
      return;
    }
    if (yield) {
      // Notifications stay off; kicking the queue's own notify eventfd brings
      // this queue back after the loop has served whatever else is ready.
      const uint64_t one = 1;
      ssize_t n = write(q.notify_fd, &one, sizeof(one));
      (void)n;  // EAGAIN only when the counter is near overflow: readable anyway
      return;
    }
    absl::StatusOr<bool> more = q.ring->EnableNotification();
    if (!more.ok()) {
      Fail(absl::StrFormat("virtio-blk queue %u: %s", q.index, more.status().message()));
      return;
    }
    if (!*more) return;
  }
}

void VirtioBlk::StartRequest(Queue& q, const DescriptorChain& chain) {
  const std::span<const Segment> segs(chain.segments);
  // The queue guarantees device-readable segments come first.
  size_t nr = 0;
  uint64_t rlen = 0;
  while (nr < segs.size() && !segs[nr].device_writable) rlen += segs[nr++].len;
  const uint64_t wlen = chain.total_len - rlen;
  const std::span<const Segment> readable = segs.first(nr);
  const std::span<const Segment> writable = segs.subspan(nr);
  if (rlen < kHeaderSize) {
    Fail(absl::StrFormat(
        "virtio-blk queue %u: request (head %u) starts with %u device-readable bytes; the "
        "request header needs 16",
        q.index, chain.head, rlen));
    return;
  }
  if (wlen == 0) {
    Fail(
        absl::StrFormat("virtio-blk queue %u: request (head %u) has no device-writable status byte",
                        q.index, chain.head));
    return;
  }
  uint8_t header[kHeaderSize];
  CopyFromSegments(readable, 0, header, kHeaderSize);
  uint32_t type;
  uint64_t sector;
  std::memcpy(&type, header, 4);
  std::memcpy(&sector, header + 8, 8);
  uint8_t* status = writable.back().host + writable.back().len - 1;
  const uint64_t rdata = rlen - kHeaderSize;  // readable bytes after the header
  const uint64_t wdata = wlen - 1;            // writable bytes before the status
  const bool ro = disk_.readonly();

  auto in_range = [&](uint64_t first, uint64_t sectors) {
    return first <= capacity_sectors_ && sectors <= capacity_sectors_ - first;
  };
  auto done = [&](uint8_t value, uint32_t used = 1) {
    Complete(q, chain.head, status, value, used);
  };

  block::Op op;
  uint64_t data_len = 0;
  switch (type) {
    case kBlkTypeIn:
    case kBlkTypeOut: {
      const bool in = type == kBlkTypeIn;
      (in ? counters_.reads : counters_.writes).fetch_add(1, std::memory_order_relaxed);
      if (in && rdata != 0) {
        Fail(absl::StrFormat(
            "virtio-blk queue %u: read request (head %u) has %u device-readable data bytes",
            q.index, chain.head, rdata));
        return;
      }
      if (!in && wdata != 0) {
        Fail(absl::StrFormat(
            "virtio-blk queue %u: write request (head %u) has %u device-writable data bytes",
            q.index, chain.head, wdata));
        return;
      }
      data_len = in ? wdata : rdata;
      if ((!in && ro) || data_len % kSector != 0 || !in_range(sector, data_len / kSector)) {
        return done(kBlkStatusIoErr);
      }
      if (data_len == 0) return done(kBlkStatusOk);
      q.iov.clear();
      if (in) {
        GatherSegments(writable, 0, data_len, &q.iov);
      } else {
        GatherSegments(readable, kHeaderSize, data_len, &q.iov);
      }
      if (q.iov.size() > kBlkSegMax) return done(kBlkStatusIoErr);
      op.type = in ? block::OpType::kRead : block::OpType::kWrite;
      op.offset = sector * kSector;
      break;
    }
    case kBlkTypeFlush:
      counters_.flushes.fetch_add(1, std::memory_order_relaxed);
      op.type = block::OpType::kFlush;
      break;
    case kBlkTypeGetId: {
      counters_.get_ids.fetch_add(1, std::memory_order_relaxed);
      if (wdata == 0) return done(kBlkStatusIoErr);
      uint8_t id[kMaxDiskSerial] = {};
      std::memcpy(id, serial_.data(), serial_.size());
      const uint64_t n = std::min<uint64_t>(wdata, kMaxDiskSerial);
      CopyToSegments(writable, id, n);
      return done(kBlkStatusOk, static_cast<uint32_t>(n + 1));
    }
    case kBlkTypeDiscard:
    case kBlkTypeWriteZeroes: {
      const bool discard = type == kBlkTypeDiscard;
      (discard ? counters_.discards : counters_.write_zeroes)
          .fetch_add(1, std::memory_order_relaxed);
      const uint64_t feature = discard ? kBlkFeatureDiscard : kBlkFeatureWriteZeroes;
      if (ro) return done(kBlkStatusIoErr);
      if ((driver_features_ & feature) == 0) return done(kBlkStatusUnsupp);
      if (rdata == 0 || rdata % kRangeSegSize != 0 || rdata / kRangeSegSize > kMaxRangeSegs) {
        return done(kBlkStatusIoErr);
      }
      uint8_t seg[kRangeSegSize];
      CopyFromSegments(readable, kHeaderSize, seg, kRangeSegSize);
      uint64_t first;
      uint32_t count, flags;
      std::memcpy(&first, seg, 8);
      std::memcpy(&count, seg + 8, 4);
      std::memcpy(&flags, seg + 12, 4);
      const uint32_t allowed = discard ? 0 : kBlkDiscardFlagUnmap;
      if ((flags & ~allowed) != 0) return done(kBlkStatusUnsupp);
      const uint32_t max = discard ? kBlkMaxDiscardSectors : kBlkMaxWriteZeroesSectors;
      if (count > max || !in_range(first, count)) return done(kBlkStatusIoErr);
      if (count == 0) return done(kBlkStatusOk);
      op.type = discard ? block::OpType::kDiscard : block::OpType::kWriteZeroes;
      op.offset = first * kSector;
      op.length = uint64_t{count} * kSector;
      op.unmap = (flags & kBlkDiscardFlagUnmap) != 0;
      break;
    }
    default:
      counters_.unknown.fetch_add(1, std::memory_order_relaxed);
      return done(kBlkStatusUnsupp);
  }

  const uint32_t slot = q.free_slots.back();
  Request& r = q.slots[slot];
  r.head = chain.head;
  r.type = type;
  r.status = status;
  r.data_len = data_len;

  if (disk_.direct() && data_len > 0) {
    const uint64_t mem_align = disk_.memory_alignment();
    const uint64_t lbs = disk_.logical_block_size();
    const bool aligned = std::all_of(q.iov.begin(), q.iov.end(), [&](const iovec& v) {
      return reinterpret_cast<uintptr_t>(v.iov_base) % mem_align == 0 && v.iov_len % lbs == 0;
    });
    if (!aligned) {
      const uint64_t align = std::max<uint64_t>(mem_align, 4096);
      const uint64_t size = (data_len + align - 1) / align * align;
      uint8_t* buf = nullptr;
      if (data_len > kMaxBounce ||
          (buf = static_cast<uint8_t*>(std::aligned_alloc(align, size))) == nullptr) {
        return done(kBlkStatusIoErr);
      }
      counters_.bounced.fetch_add(1, std::memory_order_relaxed);
      r.bounce.reset(buf);
      r.bounce_len = size;
      q.bounce_bytes += size;
      if (type == kBlkTypeIn) {
        r.guest_iov = q.iov;
      } else {
        CopyFromSegments(readable, kHeaderSize, buf, data_len);
      }
      q.iov.assign(1, iovec{buf, data_len});
    }
  }
  if (op.type == block::OpType::kRead || op.type == block::OpType::kWrite) op.iov = q.iov;
  op.tag = slot;
  if (absl::Status s = q.engine->Queue(op); !s.ok()) {
    // Cannot happen: the engine is as deep as the largest ring.
    if (r.bounce) {
      q.bounce_bytes -= r.bounce_len;
      r.bounce.reset();
    }
    return done(kBlkStatusIoErr);
  }
  q.free_slots.pop_back();
  ++in_flight_;
  BumpMax(counters_.in_flight_max, in_flight_);
}

void VirtioBlk::OnCompletions(Queue& q) {
  q.engine->Reap(
      [&](uint64_t tag, int64_t result) { FinishRequest(q, static_cast<uint32_t>(tag), result); });
  if (failed_) return;
  SignalIfNeeded(q);
  if (q.stalled && !failed_) {
    q.stalled = false;
    ProcessQueue(q);
  }
}

void VirtioBlk::FinishRequest(Queue& q, uint32_t slot, int64_t result) {
  if (slot >= q.slots.size()) return;
  Request& r = q.slots[slot];
  uint8_t value = kBlkStatusOk;
  uint32_t used = 1;
  switch (r.type) {
    case kBlkTypeIn:
      if (result == static_cast<int64_t>(r.data_len)) {
        if (r.bounce) CopyToIov(r.guest_iov, r.bounce.get());
        counters_.bytes_read.fetch_add(r.data_len, std::memory_order_relaxed);
        used = static_cast<uint32_t>(r.data_len + 1);
      } else {
        value = kBlkStatusIoErr;  // an error, or the file shrank under us
      }
      break;
    case kBlkTypeOut:
      if (result == static_cast<int64_t>(r.data_len)) {
        counters_.bytes_written.fetch_add(r.data_len, std::memory_order_relaxed);
      } else {
        value = kBlkStatusIoErr;
      }
      break;
    default:
      if (result != 0) value = kBlkStatusIoErr;
      break;
  }
  if (r.bounce) {
    q.bounce_bytes -= r.bounce_len;
    r.bounce.reset();
    r.guest_iov.clear();
  }
  q.free_slots.push_back(slot);
  --in_flight_;
  if (!failed_) Complete(q, r.head, r.status, value, used);
}

void VirtioBlk::Complete(Queue& q, uint16_t head, uint8_t* status, uint8_t value,
                         uint32_t used_len) {
  *status = value;
  if (value == kBlkStatusIoErr) counters_.ioerr.fetch_add(1, std::memory_order_relaxed);
  if (value == kBlkStatusUnsupp) counters_.unsupp.fetch_add(1, std::memory_order_relaxed);
  if (absl::Status s = q.ring->AddUsed(head, used_len); !s.ok()) {
    Fail(absl::StrFormat("virtio-blk queue %u: %s", q.index, s.message()));
    return;
  }
  q.used_added = true;
}

void VirtioBlk::SignalIfNeeded(Queue& q) {
  if (!q.used_added || failed_) return;
  q.used_added = false;
  if (q.ring->ShouldNotify()) interrupts_->SignalUsed(q.index);
}

std::string VirtioBlk::StatsLine() const {
  auto get = [](const std::atomic<uint64_t>& v) { return v.load(std::memory_order_relaxed); };
  const Counters& c = counters_;
  return absl::StrFormat(
      "engine=%s queues=%u reads=%u writes=%u flushes=%u discards=%u write_zeroes=%u "
      "get_id=%u unsupported_type=%u bytes_read=%u bytes_written=%u ioerr=%u unsupp=%u "
      "bounced=%u inflight_max=%u",
      engine_name(), queues_.size(), get(c.reads), get(c.writes), get(c.flushes), get(c.discards),
      get(c.write_zeroes), get(c.get_ids), get(c.unknown), get(c.bytes_read), get(c.bytes_written),
      get(c.ioerr), get(c.unsupp), get(c.bounced), get(c.in_flight_max));
}

}  // namespace flint::virtio
