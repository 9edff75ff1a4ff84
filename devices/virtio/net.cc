#include "devices/virtio/net.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "devices/virtio/segments.h"

namespace flint::virtio {

// Headers and config space are little-endian; flint runs on x86-64 only, so
// they are copied as they are.
static_assert(std::endian::native == std::endian::little);
static_assert(kNetHdrSize == net::kVnetHdrSize);

namespace {

// struct virtio_net_hdr_v1, as laid out in memory.
struct NetHdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
  uint16_t num_buffers;
};
static_assert(sizeof(NetHdr) == kNetHdrSize);

NetHdr LoadHdr(const uint8_t* p) {
  NetHdr h;
  std::memcpy(&h, p, sizeof(h));
  return h;
}


// The Internet checksum (RFC 1071) over a byte stream that may arrive in
// pieces of any length: big-endian 16-bit words, `odd` remembering a word
// whose high byte came at the end of the previous piece.
class OnesSum {
 public:
  void Add(const uint8_t* p, uint64_t n) {
    if (n != 0 && odd_) {
      sum_ += p[0];
      ++p;
      --n;
      odd_ = false;
    }
    for (; n >= 2; p += 2, n -= 2) sum_ += (uint32_t{p[0]} << 8) | p[1];
    if (n != 0) {
      sum_ += uint32_t{p[0]} << 8;
      odd_ = true;
    }
  }
  // The value to store in the checksum field, big-endian. The field held the
  // pseudo-header sum (the driver's CHECKSUM_PARTIAL convention), which is
  // thereby included. 0 goes out as 0xffff, its equal in one's complement,
  // because 0 means "no checksum" to UDP over IPv4.
  void Store(uint8_t out[2]) const {
    uint64_t s = sum_;
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    uint16_t v = static_cast<uint16_t>(~s);
    if (v == 0) v = 0xffff;
    out[0] = static_cast<uint8_t>(v >> 8);
    out[1] = static_cast<uint8_t>(v);
  }

 private:
  uint64_t sum_ = 0;  // 64 bits: a 64 KiB frame cannot overflow it
  bool odd_ = false;
};

// NEEDS_CSUM: the checksum covers [csum_start, end) and goes at
// csum_start + csum_offset; both must lie inside the frame.
bool CsumRangeOk(const NetHdr& h, uint64_t frame_len) {
  return h.csum_start < frame_len && uint64_t{h.csum_offset} + 2 <= frame_len - h.csum_start;
}

void DrainEventfd(int fd) {
  uint64_t count;
  // Readable, so it cannot block; the value only says "kicked".
  ssize_t n = read(fd, &count, sizeof(count));
  (void)n;
}

// A chain slot that is reused keeps its segment list's capacity (no
// allocation per frame); one a guest blew up to thousands of segments gives
// that memory back once its chain is done.
void TrimSegments(DescriptorChain& c) {
  if (c.segments.capacity() > kNetKeepSegments) std::vector<Segment>().swap(c.segments);
}

void Kick(int fd) {
  const uint64_t one = 1;
  // Fails only when the counter is about to overflow: it is kicked already.
  ssize_t n = write(fd, &one, sizeof(one));
  (void)n;
}

}  // namespace

struct VirtioNet::RxQueue {
  uint16_t index = 0;  // virtqueue index (2 * pair)
  SplitQueue* ring = nullptr;
  int notify_fd = -1;
  bool watching = false;
  // Receive buffers popped ahead of the frames that will fill them (so a
  // frame is only taken from the backend when it can be delivered whole):
  // a circular buffer as long as the ring, reused, so no allocation per frame.
  std::vector<DescriptorChain> held;
  size_t held_first = 0;
  size_t held_count = 0;
  uint64_t held_room = 0;
  bool armed = false;  // notifications on: waiting for the driver to add buffers
  bool used_added = false;
};

struct VirtioNet::TxQueue {
  uint16_t pair = 0;
  uint16_t index = 0;  // virtqueue index (2 * pair + 1)
  SplitQueue* ring = nullptr;
  int notify_fd = -1;
  bool watching = false;
  DescriptorChain chain;          // the frame being sent; kept while the backend is busy
  bool pending = false;           // `chain` is checked and waits for the backend
  uint8_t hdr[kNetHdrSize] = {};  // the header as checked (sent instead of re-reading the guest's)
  uint64_t frame_len = 0;
  uint8_t csum[2] = {};  // the software checksum, spliced into the frame's iovecs
  std::vector<iovec> iov;
  bool used_added = false;
  bool in_progress = false;  // ProcessTx on the stack
  bool retry = false;        // tx_ready arrived while it was
};

struct VirtioNet::CtrlQueue {
  uint16_t index = 0;
  SplitQueue* ring = nullptr;
  int notify_fd = -1;
  bool watching = false;
  DescriptorChain chain;
  bool used_added = false;
};

VirtioNet::VirtioNet(const NicConfig& config, std::unique_ptr<net::NetBackend> backend,
                     uint16_t max_pairs)
    : configured_mac_(config.mac),
      mtu_(config.mtu == 0 ? kNetDefaultMtu : config.mtu),
      max_pairs_(max_pairs),
      features_(kNetFeatureCsum | kNetFeatureGuestCsum | kNetFeatureMtu | kNetFeatureMac |
                kNetFeatureMrgRxbuf | kNetFeatureStatus | kNetFeatureCtrlVq | kNetFeatureCtrlRx |
                kNetFeatureCtrlRxExtra | kNetFeatureCtrlMacAddr |
                (max_pairs > 1 ? kNetFeatureMq : 0)),
      mac_(config.mac),
      backend_(std::move(backend)) {
  ResetRxFilter();
  for (uint16_t p = 0; p < max_pairs_; ++p) {
    auto rx = std::make_unique<RxQueue>();
    rx->index = static_cast<uint16_t>(2 * p);
    rx_.push_back(std::move(rx));
    auto tx = std::make_unique<TxQueue>();
    tx->pair = p;
    tx->index = static_cast<uint16_t>(2 * p + 1);
    tx_.push_back(std::move(tx));
  }
  ctrl_ = std::make_unique<CtrlQueue>();
  // Room for the largest frame a backend may hand over, and in front of it
  // the header that RX synthesises for a backend without one.
  staging_.resize(kNetHdrSize + net::kVnetHdrSize + net::kMaxFrameSize);
  description_ = backend_->Describe();
}

absl::StatusOr<std::unique_ptr<VirtioNet>> VirtioNet::Create(
    const NicConfig& config, std::unique_ptr<net::NetBackend> backend) {
  if (backend == nullptr) return absl::InvalidArgumentError("virtio-net needs a backend");
  const auto& m = config.mac;
  const std::string mac =
      absl::StrFormat("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  if (std::all_of(m.begin(), m.end(), [](uint8_t b) { return b == 0; })) {
    return absl::InvalidArgumentError(
        "virtio-net: the MAC address is all zero; give mac= or let the VM pick one");
  }
  if (m[0] & 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "virtio-net: MAC address %s is a multicast address; the first byte must be even", mac));
  }
  if (config.mtu != 0 && (config.mtu < 68 || config.mtu > 65520)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("virtio-net: mtu=%u must be between 68 and 65520", config.mtu));
  }
  if (config.queues == 0 || config.queues > kMaxNicQueues) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "virtio-net: queues=%u must be between 1 and %u", config.queues, kMaxNicQueues));
  }
  const uint16_t backend_pairs = backend->queue_pairs();
  if (backend_pairs == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("virtio-net: the %s backend offers no queue pairs", backend->kind()));
  }
  const uint16_t pairs = std::min(config.queues, backend_pairs);
  return std::unique_ptr<VirtioNet>(new VirtioNet(config, std::move(backend), pairs));
}

VirtioNet::~VirtioNet() {
  EventLoop* loop;
  {
    absl::MutexLock l(&backend_mu_);
    loop = backend_loop_;
  }
  if (loop == nullptr) return;  // never started: nothing is registered anywhere
  loop->RunSync([this] {
    StopServing();
    if (backend_started_) backend_->Stop();
    backend_started_ = false;
  });
}

// ---- configuration -------------------------------------------------------

void VirtioNet::ReadConfig(uint32_t offset, std::span<uint8_t> data) {
  uint8_t image[kNetConfigSize] = {};
  {
    absl::MutexLock l(&config_mu_);
    std::memcpy(image + kNetCfgMac, mac_.data(), 6);
    std::memcpy(image + kNetCfgStatus, &status_, 2);
  }
  std::memcpy(image + kNetCfgMaxQueuePairs, &max_pairs_, 2);
  std::memcpy(image + kNetCfgMtu, &mtu_, 2);
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t at = uint64_t{offset} + i;
    data[i] = at < kNetConfigSize ? image[at] : 0;
  }
}

void VirtioNet::WriteConfig(uint32_t, std::span<const uint8_t>) {
  // A VERSION_1 driver changes the MAC through the control queue
  // (MAC_ADDR_SET); every field is read-only to it, so writes are dropped.
}

bool VirtioNet::link_up() const {
  absl::MutexLock l(&config_mu_);
  return (status_ & kNetStatusLinkUp) != 0;
}

std::string VirtioNet::BackendDescription() const {
  EventLoop* loop;
  {
    absl::MutexLock l(&backend_mu_);
    loop = backend_loop_;
    if (loop == nullptr) return description_;  // not started: nothing moves
  }
  // Started: the backend lives on the loop (swaps happen there too), so its
  // live counters are read there.
  std::string d;
  loop->RunSync([&] { d = backend_->Describe(); });
  return d;
}

void VirtioNet::RefreshDescription() {
  std::string d = backend_->Describe();
  absl::MutexLock l(&backend_mu_);
  description_ = std::move(d);
}

// ---- activation and reset ------------------------------------------------

absl::Status VirtioNet::Activate(const ActivateContext& ctx) {
  if (active_) return absl::FailedPreconditionError("virtio-net is already active");
  if (ctx.loop == nullptr || ctx.interrupts == nullptr || ctx.memory == nullptr) {
    return absl::InvalidArgumentError(
        "virtio-net activation needs guest memory, an event loop and interrupts");
  }
  // Without MQ the driver uses one pair and finds the control queue at 2.
  const bool mq = (ctx.features & kNetFeatureMq) != 0;
  const uint16_t pairs = mq ? max_pairs_ : 1;
  const uint16_t ctrl_index = mq ? static_cast<uint16_t>(2 * max_pairs_) : 2;
  auto forget = [this] {
    for (auto& q : rx_) q->ring = nullptr;
    for (auto& t : tx_) t->ring = nullptr;
    ctrl_->ring = nullptr;
  };
  for (const ActiveQueue& aq : ctx.queues) {
    if (aq.index >= num_queues() || aq.queue == nullptr || aq.notify_fd < 0) {
      forget();
      return absl::InvalidArgumentError(
          absl::StrFormat("virtio-net cannot serve queue %u (it has %u)", aq.index, num_queues()));
    }
    SplitQueue** ring = nullptr;
    int* fd = nullptr;
    if (aq.index == ctrl_index) {
      ring = &ctrl_->ring;
      fd = &ctrl_->notify_fd;
      ctrl_->index = aq.index;
    } else if (aq.index < 2 * pairs) {
      if (aq.index % 2 == 0) {
        ring = &rx_[aq.index / 2]->ring;
        fd = &rx_[aq.index / 2]->notify_fd;
      } else {
        ring = &tx_[aq.index / 2]->ring;
        fd = &tx_[aq.index / 2]->notify_fd;
      }
    } else {
      continue;  // a queue the negotiated features leave unused
    }
    if (*ring != nullptr) {
      forget();
      return absl::InvalidArgumentError(
          absl::StrFormat("virtio-net: queue %u activated twice", aq.index));
    }
    *ring = aq.queue;
    *fd = aq.notify_fd;
  }

  // The backend starts with the first activation and then stays up.
  bool start = false;
  {
    absl::MutexLock l(&backend_mu_);
    if (backend_loop_ == nullptr) {
      backend_loop_ = ctx.loop;
      start = true;
    } else if (backend_loop_ != ctx.loop) {
      forget();
      return absl::InvalidArgumentError("virtio-net activated on a different event loop");
    }
  }
  if (start) {
    const uint64_t gen = backend_gen_ + 1;
    absl::Status s = backend_->Start(ctx.loop, MakeEvents(gen));
    if (!s.ok()) {
      backend_->Stop();
      // Worded before backend_loop_ is cleared: from then on SwapBackend may
      // replace (and free) the backend from another thread.
      absl::Status err = absl::UnavailableError(absl::StrFormat(
          "virtio-net: the %s backend did not start: %s", backend_->kind(), s.message()));
      {
        absl::MutexLock l(&backend_mu_);
        backend_loop_ = nullptr;
      }
      forget();
      return err;
    }
    backend_gen_ = gen;
    backend_started_ = true;
    rx_paused_.assign(backend_->queue_pairs(), false);
    rx_serving_.assign(backend_->queue_pairs(), false);
    RefreshDescription();
  }

  loop_ = ctx.loop;
  interrupts_ = ctx.interrupts;
  driver_features_ = ctx.features;
  active_pairs_.store(1, std::memory_order_relaxed);
  failed_ = false;
  active_ = true;
  ApplyGuestCsum();
  auto watch = [this](int fd, bool* watching, EventLoop::Callback cb) {
    absl::Status s = loop_->Add(fd, std::move(cb));
    if (s.ok()) *watching = true;
    return s;
  };
  absl::Status s;
  for (auto& qp : rx_) {
    RxQueue* q = qp.get();
    if (q->ring == nullptr) continue;
    q->held.resize(q->ring->size());
    q->held_first = q->held_count = 0;
    q->held_room = 0;
    // Buffers are popped when frames arrive; the driver need not kick until
    // we run out (EnsureRxRoom re-arms).
    q->ring->DisableNotification();
    q->armed = false;
    if (s.ok()) s = watch(q->notify_fd, &q->watching, [this, q] { OnRxNotify(*q); });
  }
  for (auto& tp : tx_) {
    TxQueue* t = tp.get();
    if (t->ring == nullptr || !s.ok()) continue;
    s = watch(t->notify_fd, &t->watching, [this, t] { OnTxNotify(*t); });
  }
  if (ctrl_->ring != nullptr && s.ok()) {
    s = watch(ctrl_->notify_fd, &ctrl_->watching, [this] {
      DrainEventfd(ctrl_->notify_fd);
      if (!failed_) ProcessCtrl();
    });
  }
  if (!s.ok()) {
    StopServing();
    return s;
  }
  // Frames may wait in the backend, and the driver may have queued TX already.
  ServeAll();
  return absl::OkStatus();
}

void VirtioNet::Reset() {
  StopServing();
  failed_ = false;
}

void VirtioNet::StopServing() {
  if (!active_) return;
  // Off the loop first, then forget the rings: afterwards nothing touches
  // guest memory or the queues. The backend keeps running, paused.
  auto unwatch = [this](int fd, bool* watching) {
    if (*watching) loop_->Remove(fd);
    *watching = false;
  };
  for (auto& q : rx_) {
    unwatch(q->notify_fd, &q->watching);
    for (DescriptorChain& c : q->held) TrimSegments(c);
    q->ring = nullptr;
    q->notify_fd = -1;
    q->held_first = q->held_count = 0;
    q->held_room = 0;
    q->armed = false;
    q->used_added = false;
  }
  for (auto& t : tx_) {
    unwatch(t->notify_fd, &t->watching);
    TrimSegments(t->chain);
    t->ring = nullptr;
    t->notify_fd = -1;
    t->pending = false;  // the ring it came from is gone
    t->used_added = false;
  }
  unwatch(ctrl_->notify_fd, &ctrl_->watching);
  ctrl_->ring = nullptr;
  ctrl_->notify_fd = -1;
  ctrl_->used_added = false;
  active_ = false;
  if (backend_started_) {
    for (uint16_t b = 0; b < rx_paused_.size(); ++b) PauseBackendRx(b);
  }
  loop_ = nullptr;
  interrupts_ = nullptr;
  driver_features_ = 0;
  active_pairs_.store(1, std::memory_order_relaxed);
  ResetRxFilter();
  absl::MutexLock l(&config_mu_);
  mac_ = configured_mac_;  // a new driver starts from the configured address
}

void VirtioNet::Fail(const std::string& why) {
  if (failed_) return;
  failed_ = true;
  interrupts_->NeedsReset(why);
}

// ---- backend events, link and swap --------------------------------------

net::BackendEvents VirtioNet::MakeEvents(uint64_t gen) {
  // Events from a backend that has been swapped out (or not yet swapped in)
  // carry an old generation and are ignored.
  net::BackendEvents e;
  e.rx_ready = [this, gen](uint16_t q) {
    if (gen == backend_gen_) ServeRx(q);
  };
  e.tx_ready = [this, gen](uint16_t q) {
    if (gen == backend_gen_) OnTxReady(q);
  };
  e.failed = [this, gen](const absl::Status& why, bool recovering) {
    if (gen == backend_gen_) OnBackendFailed(why, recovering);
  };
  e.link_restored = [this, gen] {
    if (gen == backend_gen_) OnBackendRestored();
  };
  return e;
}

void VirtioNet::OnBackendFailed(const absl::Status& why, bool recovering) {
  counters_.backend_errors.fetch_add(1, std::memory_order_relaxed);
  std::fprintf(stderr, "flint: virtio-net: the %s backend failed: %s; link down %s\n",
               std::string(backend_->kind()).c_str(), std::string(why.message()).c_str(),
               recovering ? "while it restarts" : "until the backend is replaced");
  RefreshDescription();
  SetLink(false);
}

void VirtioNet::OnBackendRestored() {
  RefreshDescription();
  SetLink(true);
}

void VirtioNet::SetLink(bool up) {
  if (link_up_ == up) return;
  link_up_ = up;
  {
    absl::MutexLock l(&config_mu_);
    status_ = up ? kNetStatusLinkUp : 0;
  }
  counters_.link_changes.fetch_add(1, std::memory_order_relaxed);
  if (active_ && !failed_) interrupts_->SignalConfigChange();
  if (up) ServeAll();
}

void VirtioNet::ApplyGuestCsum() {
  const bool accepted = active_ && (driver_features_ & kNetFeatureGuestCsum) != 0;
  if (absl::Status s = backend_->SetGuestCsum(accepted); !s.ok()) {
    // Not fatal: the host then finishes every checksum itself.
    std::fprintf(stderr, "flint: virtio-net: receive checksum offload stays off: %s\n",
                 std::string(s.message()).c_str());
  }
}

bool VirtioNet::Flowing() const { return active_ && !failed_ && link_up_ && backend_started_; }

void VirtioNet::ServeAll() {
  if (!backend_started_) return;
  for (uint16_t b = 0; b < rx_paused_.size(); ++b) ServeRx(b);
  for (auto& t : tx_) ProcessTx(*t);
}

absl::Status VirtioNet::SwapBackend(std::unique_ptr<net::NetBackend> backend) {
  if (backend == nullptr) return absl::InvalidArgumentError("virtio-net: no backend to swap in");
  if (backend->queue_pairs() == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("virtio-net: the %s backend offers no queue pairs", backend->kind()));
  }
  std::unique_ptr<net::NetBackend> old;  // destroyed here, off the loop
  EventLoop* loop;
  {
    absl::MutexLock l(&backend_mu_);
    loop = backend_loop_;
    if (loop == nullptr) {
      // Never started: nothing runs for it on any loop.
      old = std::move(backend_);
      backend_ = std::move(backend);
      description_ = backend_->Describe();
      counters_.swaps.fetch_add(1, std::memory_order_relaxed);
      return absl::OkStatus();
    }
  }
  absl::Status s;
  loop->RunSync([&] { s = SwapOnLoop(std::move(backend), &old); });
  return s;
}

absl::Status VirtioNet::SwapOnLoop(std::unique_ptr<net::NetBackend> backend,
                                   std::unique_ptr<net::NetBackend>* old) {
  EventLoop* loop;
  {
    absl::MutexLock l(&backend_mu_);
    loop = backend_loop_;
    if (!backend_started_) {
      // The first activation failed to start the old one: same as before it.
      *old = std::move(backend_);
      backend_ = std::move(backend);
      description_ = backend_->Describe();
      counters_.swaps.fetch_add(1, std::memory_order_relaxed);
      return absl::OkStatus();
    }
  }
  const uint16_t in_use = active_ ? active_pairs_.load(std::memory_order_relaxed) : 1;
  if (backend->queue_pairs() < in_use) {
    const std::string msg = absl::StrFormat(
        "virtio-net: the new %s backend has %u queue pairs but the guest uses %u; still using %s",
        backend->kind(), backend->queue_pairs(), in_use, backend_->Describe());
    *old = std::move(backend);
    return absl::FailedPreconditionError(msg);
  }
  // Start the new one before touching the old, so a failure changes nothing.
  // Its events carry the next generation and are ignored until it takes over.
  const uint64_t gen = backend_gen_ + 1;
  if (absl::Status s = backend->Start(loop, MakeEvents(gen)); !s.ok()) {
    backend->Stop();
    const std::string msg =
        absl::StrFormat("virtio-net: the new %s backend did not start (%s); still using %s",
                        backend->kind(), s.message(), backend_->Describe());
    *old = std::move(backend);
    return absl::UnavailableError(msg);
  }
  SetLink(false);
  // Stop() finishes a frame the old backend had half written; after it no
  // callback of the old backend runs. A TX frame it refused is still
  // pending in its TxQueue and goes to the new backend.
  backend_->Stop();
  *old = std::move(backend_);
  backend_ = std::move(backend);
  backend_gen_ = gen;
  rx_paused_.assign(backend_->queue_pairs(), false);
  rx_serving_.assign(backend_->queue_pairs(), false);
  ApplyGuestCsum();
  RefreshDescription();
  counters_.swaps.fetch_add(1, std::memory_order_relaxed);
  // Serves every queue on the new backend (or, with the device reset,
  // pauses its receive side).
  SetLink(true);
  return absl::OkStatus();
}

// ---- RX ------------------------------------------------------------------

void VirtioNet::PauseBackendRx(uint16_t b) {
  if (rx_paused_[b]) return;
  rx_paused_[b] = true;
  counters_.rx_pauses.fetch_add(1, std::memory_order_relaxed);
  backend_->PauseRx(b);
}

void VirtioNet::ResumeBackendRx(uint16_t b) {
  if (!rx_paused_[b]) return;
  rx_paused_[b] = false;
  backend_->ResumeRx(b);
}

VirtioNet::RxQueue* VirtioNet::RxTarget(uint16_t b) {
  // Backend queues beyond the pairs in use share the receive queues.
  RxQueue* q = rx_[b % active_pairs_.load(std::memory_order_relaxed)].get();
  return q->ring != nullptr ? q : nullptr;
}

void VirtioNet::OnRxNotify(RxQueue& q) {
  DrainEventfd(q.notify_fd);
  counters_.rx_notifies.fetch_add(1, std::memory_order_relaxed);
  if (failed_ || !backend_started_) return;
  // The driver added buffers (whatever waited for them may go on), or
  // ServeRx kicked itself after a burst.
  for (uint16_t b = 0; b < rx_paused_.size(); ++b) {
    if (RxTarget(b) == &q) ServeRx(b);
  }
}

void VirtioNet::ServeRx(uint16_t b) {
  if (!backend_started_ || b >= rx_paused_.size() || rx_serving_[b]) return;
  RxQueue* q = Flowing() ? RxTarget(b) : nullptr;
  if (q == nullptr) {
    PauseBackendRx(b);
    return;
  }
  rx_serving_[b] = true;
  // The backend's offer size is fixed; with no vnet header from the backend,
  // the frame lands after the space where the header will be synthesised.
  const size_t at = backend_->vnet_hdr() ? 0 : kNetHdrSize;
  const std::span<uint8_t> buf(staging_.data() + at, net::kVnetHdrSize + net::kMaxFrameSize);
  for (uint32_t budget = kNetBurst;; --budget) {
    if (budget == 0) {
      Kick(q->notify_fd);  // let the rest of the loop run, then go on (OnRxNotify)
      break;
    }
    if (!EnsureRxRoom(*q)) {
      if (!failed_) PauseBackendRx(b);
      break;
    }
    ResumeBackendRx(b);
    absl::StatusOr<size_t> n = backend_->Receive(b, buf);
    if (!n.ok() || *n > buf.size()) {
      // The backend reports its failure through `failed` as well.
      counters_.backend_errors.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    if (*n == 0) break;
    DeliverFrame(*q, *n);
    if (!Flowing()) break;
  }
  rx_serving_[b] = false;
  SignalIfNeeded(q->ring, q->index, &q->used_added);
}

bool VirtioNet::EnsureRxRoom(RxQueue& q) {
  // With mergeable buffers a frame may span chains: hold enough for the
  // largest one. Without, one chain must take the frame whole.
  const bool mrg = (driver_features_ & kNetFeatureMrgRxbuf) != 0;
  const uint64_t want = kNetHdrSize + mtu_ + kNetFrameOverhead;
  while (q.held_count == 0 || (mrg && q.held_room < want)) {
    // Every buffer of the ring is held and still not enough: go with it
    // (frames that do not fit are dropped) rather than wait for ever.
    if (q.held_count == q.held.size()) break;
    DescriptorChain& slot = q.held[(q.held_first + q.held_count) % q.held.size()];
    absl::StatusOr<bool> popped = q.ring->Pop(&slot);
    if (!popped.ok()) {
      Fail(absl::StrFormat("virtio-net rx queue %u: %s", q.index, popped.status().message()));
      return false;
    }
    if (!*popped) {
      if (q.armed) return false;
      // Ask for a kick, then look once more: the driver may have added
      // buffers before it saw the request.
      q.armed = true;
      absl::StatusOr<bool> more = q.ring->EnableNotification();
      if (!more.ok()) {
        Fail(absl::StrFormat("virtio-net rx queue %u: %s", q.index, more.status().message()));
        return false;
      }
      if (*more) continue;
      return false;
    }
    for (const Segment& s : slot.segments) {
      if (!s.device_writable) {
        Fail(absl::StrFormat(
            "virtio-net rx queue %u: receive buffer (head %u) has a device-readable descriptor",
            q.index, slot.head));
        return false;
      }
    }
    ++q.held_count;
    q.held_room += slot.total_len;
  }
  if (q.armed) {
    q.ring->DisableNotification();
    q.armed = false;
  }
  return true;
}

void VirtioNet::DeliverFrame(RxQueue& q, size_t received) {
  auto drop = [](std::atomic<uint64_t>& counter) {
    counter.fetch_add(1, std::memory_order_relaxed);
  };
  uint8_t* const buf = staging_.data();
  size_t frame_len;
  if (backend_->vnet_hdr()) {
    if (received < kNetHdrSize) return drop(counters_.drop_short);
    frame_len = received - kNetHdrSize;
  } else {
    std::memset(buf, 0, kNetHdrSize);
    frame_len = received;
  }
  uint8_t* const frame = buf + kNetHdrSize;
  if (frame_len < kNetMinFrame) return drop(counters_.drop_short);
  if (frame_len > mtu_ + kNetFrameOverhead) return drop(counters_.drop_long);
  if (!rx_filter_.Accept(frame)) return drop(counters_.drop_filtered);
  NetHdr h = LoadHdr(buf);
  if (h.gso_type != kNetHdrGsoNone) return drop(counters_.drop_bad_gso);  // none offered
  const bool guest_csum = (driver_features_ & kNetFeatureGuestCsum) != 0;
  uint8_t flags = h.flags & (kNetHdrFlagNeedsCsum | kNetHdrFlagDataValid);
  if (flags & kNetHdrFlagNeedsCsum) {
    if (!CsumRangeOk(h, frame_len)) return drop(counters_.drop_bad_csum);
    if (!guest_csum) {
      // The driver cannot finish a partial checksum: finish it here.
      OnesSum sum;
      sum.Add(frame + h.csum_start, frame_len - h.csum_start);
      sum.Store(frame + h.csum_start + h.csum_offset);
    }
  }
  if (!guest_csum) {
    flags = 0;  // §5.1.6.4.1: flags are zero unless GUEST_CSUM was negotiated
  } else if (!backend_->vnet_hdr()) {
    flags = kNetHdrFlagDataValid;  // passt sends complete, correct checksums
  }
  h.flags = flags;

  // Which held chains the frame will fill.
  const bool mrg = (driver_features_ & kNetFeatureMrgRxbuf) != 0;
  const uint64_t total = kNetHdrSize + frame_len;
  const size_t cap = q.held.size();
  uint64_t room = 0;
  uint16_t chains = 0;
  while (chains < q.held_count && room < total) {
    room += q.held[(q.held_first + chains) % cap].total_len;
    ++chains;
    if (!mrg) break;
  }
  if (room < total) return drop(counters_.drop_no_rx_buffers);  // the chains are kept
  h.num_buffers = chains;
  std::memcpy(buf, &h, sizeof(h));

  // Copy everything first and publish the used entries back to back, so a
  // driver polling the used ring finds all num_buffers of them together.
  uint64_t done = 0;
  for (uint16_t i = 0; i < chains; ++i) {
    const DescriptorChain& c = q.held[(q.held_first + i) % cap];
    const uint64_t n = std::min<uint64_t>(c.total_len, total - done);
    CopyToSegments(c.segments, buf + done, n);
    done += n;
  }
  done = 0;
  for (uint16_t i = 0; i < chains; ++i) {
    DescriptorChain& c = q.held[q.held_first];
    const uint64_t n = std::min<uint64_t>(c.total_len, total - done);
    done += n;
    q.held_first = (q.held_first + 1) % cap;
    --q.held_count;
    q.held_room -= c.total_len;
    TrimSegments(c);
    const bool last = i + 1 == chains;
    if (!AddUsed(q.ring, q.index, c.head, static_cast<uint32_t>(n), &q.used_added, last)) return;
  }
  counters_.rx_frames.fetch_add(1, std::memory_order_relaxed);
  counters_.rx_bytes.fetch_add(frame_len, std::memory_order_relaxed);
}

// ---- TX ------------------------------------------------------------------

void VirtioNet::OnTxNotify(TxQueue& t) {
  DrainEventfd(t.notify_fd);
  if (failed_) return;
  ProcessTx(t);
}

void VirtioNet::OnTxReady(uint16_t b) {
  if (!backend_started_) return;
  const uint16_t pairs = backend_->queue_pairs();
  for (auto& t : tx_) {
    if (t->pair % pairs == b) ProcessTx(*t);
  }
}

void VirtioNet::ProcessTx(TxQueue& t) {
  if (t.ring == nullptr || !Flowing()) return;
  if (t.in_progress) {
    t.retry = true;  // a backend call below re-entered us
    return;
  }
  t.in_progress = true;
  t.retry = false;
  uint32_t budget = kNetBurst;
  bool stop = false;
  while (!stop) {
    t.ring->DisableNotification();
    for (;;) {
      // Link down or device broken: chains stay in the ring (notifications
      // stay off); SetLink(true) or a reset picks up from here.
      if (!Flowing()) {
        stop = true;
        break;
      }
      if (!t.pending) {
        if (budget == 0) {
          Kick(t.notify_fd);  // let the rest of the loop run, then go on
          stop = true;
          break;
        }
        --budget;
        absl::StatusOr<bool> popped = t.ring->Pop(&t.chain);
        if (!popped.ok()) {
          Fail(absl::StrFormat("virtio-net tx queue %u: %s", t.index, popped.status().message()));
          stop = true;
          break;
        }
        if (!*popped) break;
        const TxVerdict v = CheckTx(t);
        if (v == TxVerdict::kFail) {
          stop = true;
          break;
        }
        if (v == TxVerdict::kDrop) {
          if (AddUsed(t.ring, t.index, t.chain.head, 0, &t.used_added)) continue;
          stop = true;
          break;
        }
        t.pending = true;
      }
      if (SendPending(t) == net::SendResult::kBusy) {
        // Keep the chain; tx_ready resumes. Notifications stay off meanwhile,
        // so the driver does not kick us for nothing.
        counters_.tx_busy.fetch_add(1, std::memory_order_relaxed);
        if (t.retry) Kick(t.notify_fd);  // tx_ready came during Send: try again soon
        stop = true;
        break;
      }
      t.pending = false;
      counters_.tx_frames.fetch_add(1, std::memory_order_relaxed);
      counters_.tx_bytes.fetch_add(t.frame_len, std::memory_order_relaxed);
      if (!AddUsed(t.ring, t.index, t.chain.head, 0, &t.used_added)) {
        stop = true;
        break;
      }
    }
    SignalIfNeeded(t.ring, t.index, &t.used_added);
    if (stop || failed_) break;
    absl::StatusOr<bool> more = t.ring->EnableNotification();
    if (!more.ok()) {
      Fail(absl::StrFormat("virtio-net tx queue %u: %s", t.index, more.status().message()));
      break;
    }
    if (!*more) break;
  }
  t.in_progress = false;
}

VirtioNet::TxVerdict VirtioNet::CheckTx(TxQueue& t) {
  const DescriptorChain& c = t.chain;
  for (const Segment& s : c.segments) {
    if (s.device_writable) {
      Fail(absl::StrFormat(
          "virtio-net tx queue %u: frame (head %u) has a device-writable descriptor", t.index,
          c.head));
      return TxVerdict::kFail;
    }
  }
  auto drop = [](std::atomic<uint64_t>& counter) {
    counter.fetch_add(1, std::memory_order_relaxed);
    return TxVerdict::kDrop;
  };
  if (c.total_len < kNetHdrSize + kNetMinFrame) return drop(counters_.drop_short);
  const uint64_t frame_len = c.total_len - kNetHdrSize;
  if (frame_len > mtu_ + kNetFrameOverhead) return drop(counters_.drop_long);
  // One copy of the header: what is checked is what is used (the guest may
  // rewrite its buffer meanwhile).
  CopyFromSegments(c.segments, 0, t.hdr, kNetHdrSize);
  const NetHdr h = LoadHdr(t.hdr);
  if (h.gso_type != kNetHdrGsoNone) return drop(counters_.drop_bad_gso);  // no GSO offered
  if ((h.flags & kNetHdrFlagNeedsCsum) && !CsumRangeOk(h, frame_len)) {
    return drop(counters_.drop_bad_csum);
  }
  t.frame_len = frame_len;
  return TxVerdict::kSend;
}

net::SendResult VirtioNet::SendPending(TxQueue& t) {
  // Built per attempt: a swap may have changed whether a header travels.
  const std::span<const Segment> segs(t.chain.segments);
  const NetHdr h = LoadHdr(t.hdr);
  t.iov.clear();
  if (backend_->vnet_hdr()) {
    // The header goes through unchanged (from our checked copy); the host
    // kernel finishes a partial checksum.
    t.iov.push_back(iovec{t.hdr, kNetHdrSize});
    GatherSegments(segs, kNetHdrSize, t.frame_len, &t.iov);
  } else if (h.flags & kNetHdrFlagNeedsCsum) {
    // No header travels, so the checksum is finished here. The frame still
    // goes from guest memory; only the two checksum bytes come from us.
    const uint64_t field = uint64_t{h.csum_start} + h.csum_offset;
    OnesSum sum;
    ForEachPiece(segs, kNetHdrSize + h.csum_start, t.frame_len - h.csum_start,
             [&](const uint8_t* p, uint64_t n) { sum.Add(p, n); });
    sum.Store(t.csum);
    GatherSegments(segs, kNetHdrSize, field, &t.iov);
    t.iov.push_back(iovec{t.csum, 2});
    GatherSegments(segs, kNetHdrSize + field + 2, t.frame_len - field - 2, &t.iov);
    counters_.tx_sw_csum.fetch_add(1, std::memory_order_relaxed);
  } else {
    GatherSegments(segs, kNetHdrSize, t.frame_len, &t.iov);
  }
  const uint16_t b = static_cast<uint16_t>(t.pair % backend_->queue_pairs());
  return backend_->Send(b, t.iov);
}

// ---- control queue -------------------------------------------------------

void VirtioNet::ProcessCtrl() {
  CtrlQueue& c = *ctrl_;
  const uint16_t pairs_before = active_pairs_.load(std::memory_order_relaxed);
  uint32_t budget = kNetBurst;
  for (;;) {
    c.ring->DisableNotification();
    bool yield = false;
    for (;;) {
      if (budget == 0) {
        Kick(c.notify_fd);  // let the rest of the loop run, then go on
        yield = true;
        break;
      }
      --budget;
      absl::StatusOr<bool> popped = c.ring->Pop(&c.chain);
      if (!popped.ok()) {
        Fail(absl::StrFormat("virtio-net control queue: %s", popped.status().message()));
        return;
      }
      if (!*popped) break;
      if (!HandleCtrl(c.chain)) return;
    }
    SignalIfNeeded(c.ring, c.index, &c.used_added);
    if (failed_) return;
    if (yield) break;
    absl::StatusOr<bool> more = c.ring->EnableNotification();
    if (!more.ok()) {
      Fail(absl::StrFormat("virtio-net control queue: %s", more.status().message()));
      return;
    }
    if (!*more) break;
  }
  // VQ_PAIRS_SET moved backend queues onto other receive queues.
  if (active_pairs_.load(std::memory_order_relaxed) != pairs_before) ServeAll();
}

bool VirtioNet::HandleCtrl(const DescriptorChain& chain) {
  const std::span<const Segment> segs(chain.segments);
  // The queue guarantees device-readable segments come first.
  size_t nr = 0;
  uint64_t rlen = 0;
  while (nr < segs.size() && !segs[nr].device_writable) rlen += segs[nr++].len;
  if (nr == segs.size()) {
    Fail(absl::StrFormat(
        "virtio-net control queue: command (head %u) has no device-writable ack byte",
        chain.head));
    return false;
  }
  uint8_t ack = kNetCtrlErr;
  if (rlen >= 2) {
    uint8_t head[2];
    CopyFromSegments(segs.first(nr), 0, head, 2);
    ack = CtrlCommand(head[0], head[1], segs.first(nr), rlen - 2);
  }
  *segs[nr].host = ack;
  if (ack != kNetCtrlOk) counters_.ctrl_err.fetch_add(1, std::memory_order_relaxed);
  return AddUsed(ctrl_->ring, ctrl_->index, chain.head, 1, &ctrl_->used_added);
}

uint8_t VirtioNet::CtrlCommand(uint8_t cls, uint8_t cmd, std::span<const Segment> segs,
                               uint64_t len) {
  constexpr uint64_t kData = 2;  // command data follows class and command
  switch (cls) {
    case kNetCtrlClassRx: {
      // PROMISC and ALLMULTI come with CTRL_RX, the other four with CTRL_RX_EXTRA.
      const uint64_t needs = cmd <= kNetCtrlRxAllmulti ? kNetFeatureCtrlRx : kNetFeatureCtrlRxExtra;
      if (cmd > kNetCtrlRxNobcast || len != 1 || !(driver_features_ & needs)) return kNetCtrlErr;
      uint8_t on;
      CopyFromSegments(segs, kData, &on, 1);
      rx_filter_.SetMode(cmd, on != 0);
      PublishRxFilter();
      return kNetCtrlOk;
    }
    case kNetCtrlClassMac:
      if (cmd == kNetCtrlMacTableSet) {
        if (!(driver_features_ & kNetFeatureCtrlRx)) return kNetCtrlErr;
        // Two tables, unicast then multicast: le32 entries, then 6 bytes
        // each. Everything is checked before anything changes; a table
        // longer than the filter keeps is read only as far as it keeps.
        uint64_t at = 0;
        std::array<std::vector<MacAddress>, 2> tables;
        for (auto& table : tables) {
          if (len - at < 4) return kNetCtrlErr;
          uint32_t n;
          CopyFromSegments(segs, kData + at, &n, 4);
          at += 4;
          if (n > (len - at) / 6) return kNetCtrlErr;
          // One copy per table: a table spread over thousands of tiny
          // descriptors is walked once, not once per address.
          static_assert(sizeof(MacAddress) == 6);
          table.resize(std::min<uint64_t>(n, NetRxFilter::kMaxEntries + 1));
          CopyFromSegments(segs, kData + at, table.data(), 6 * table.size());
          at += 6ull * n;
        }
        if (at != len) return kNetCtrlErr;
        rx_filter_.SetTables(tables[0], tables[1]);
        PublishRxFilter();
        return kNetCtrlOk;
      }
      if (cmd == kNetCtrlMacAddrSet) {
        if (len != 6 || !(driver_features_ & kNetFeatureCtrlMacAddr)) return kNetCtrlErr;
        std::array<uint8_t, 6> mac;
        CopyFromSegments(segs, kData, mac.data(), 6);
        // A NIC's own address is unicast and not all-zero (it decides which
        // unicast frames pass the filter).
        if ((mac[0] & 1) || mac == std::array<uint8_t, 6>{}) return kNetCtrlErr;
        rx_filter_.set_own_mac(mac);
        absl::MutexLock l(&config_mu_);
        mac_ = mac;
        return kNetCtrlOk;
      }
      return kNetCtrlErr;
    case kNetCtrlClassMq: {
      if (cmd != kNetCtrlMqVqPairsSet || len != 2 || !(driver_features_ & kNetFeatureMq)) {
        return kNetCtrlErr;
      }
      uint16_t n;
      CopyFromSegments(segs, kData, &n, 2);
      if (n < 1 || n > max_pairs_ || n > backend_->queue_pairs()) return kNetCtrlErr;
      active_pairs_.store(n, std::memory_order_relaxed);
      return kNetCtrlOk;
    }
    default:
      return kNetCtrlErr;
  }
}

void VirtioNet::ResetRxFilter() {
  rx_filter_.Reset();
  rx_filter_.set_own_mac(configured_mac_);
  PublishRxFilter();
}

void VirtioNet::PublishRxFilter() {
  rx_mode_.store(rx_filter_.modes(), std::memory_order_relaxed);
  mac_table_.store(rx_filter_.unicast_entries() << 16 | rx_filter_.multicast_entries(),
                   std::memory_order_relaxed);
}

// ---- used ring -----------------------------------------------------------

bool VirtioNet::AddUsed(SplitQueue* ring, uint16_t index, uint16_t head, uint32_t len,
                        bool* added, bool publish) {
  if (absl::Status s = ring->AddUsed(head, len, publish); !s.ok()) {
    Fail(absl::StrFormat("virtio-net queue %u: %s", index, s.message()));
    return false;
  }
  *added = true;
  return true;
}

void VirtioNet::SignalIfNeeded(SplitQueue* ring, uint16_t index, bool* added) {
  if (!*added || failed_) return;
  *added = false;
  if (ring->ShouldNotify()) interrupts_->SignalUsed(index);
}

std::string VirtioNet::StatsLine() const {
  auto get = [](const std::atomic<uint64_t>& v) { return v.load(std::memory_order_relaxed); };
  const Counters& c = counters_;
  const uint32_t table = mac_table_.load(std::memory_order_relaxed);
  return absl::StrFormat(
      "link=%s queue_pairs=%u/%u rx_frames=%u rx_bytes=%u tx_frames=%u tx_bytes=%u "
      "drop_short=%u drop_long=%u drop_bad_gso=%u drop_bad_csum=%u drop_no_rx_buffers=%u "
      "drop_filtered=%u backend_errors=%u tx_sw_csum=%u tx_busy=%u rx_pauses=%u "
      "rx_notifies=%u ctrl_err=%u rx_mode=%s mac_table=%s link_changes=%u swaps=%u "
      "backend=\"%s\"",
      link_up() ? "up" : "down", active_pairs_.load(std::memory_order_relaxed), max_pairs_,
      get(c.rx_frames), get(c.rx_bytes), get(c.tx_frames), get(c.tx_bytes), get(c.drop_short),
      get(c.drop_long), get(c.drop_bad_gso), get(c.drop_bad_csum), get(c.drop_no_rx_buffers),
      get(c.drop_filtered), get(c.backend_errors), get(c.tx_sw_csum), get(c.tx_busy),
      get(c.rx_pauses), get(c.rx_notifies), get(c.ctrl_err),
      NetRxFilter::ModeString(rx_mode_.load(std::memory_order_relaxed)),
      NetRxFilter::TableString(table >> 16, table & 0xffff), get(c.link_changes), get(c.swaps),
      BackendDescription());
}

}  // namespace flint::virtio
