// virtio-net (virtio 1.2 §5.1): Ethernet frames between the guest's
// virtqueues and a NetBackend (passt or TAP, net/backend.h), served on the
// VM's event loop. TX goes straight from guest memory to the backend
// (iovecs); RX lands in one staging buffer, then is copied into the guest's
// receive buffers. The backend can be replaced while the guest runs
// (SwapBackend): the guest sees the link go down and up again, and no frame
// is duplicated or split between the two backends (frames the old backend
// had buffered but not yet handed over are dropped with it; a TX frame it
// refused goes to the new one).
//
// Backend lifetime: the backend is started at the device's first Activate()
// (that is when the event loop is known) and stays started across device
// resets (the rings go away, the backend's receive side is paused); it is
// stopped when it is swapped out or when the device is destroyed.
//
// Threading: the queue callbacks, the backend's callbacks, Activate and
// Reset run on the event loop thread (device.h). ReadConfig/WriteConfig run
// on vCPU threads and take config_mu_; SwapBackend, BackendDescription,
// link_up and StatsLine may be called from any thread.
#pragma once

#include <sys/uio.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "devices/virtio/device.h"
#include "devices/virtio/net_rx_filter.h"
#include "devices/virtio/queue.h"
#include "net/backend.h"
#include "vmm/event_loop.h"
#include "vmm/vm_config.h"

namespace flint::virtio {

// Feature bits (§5.1.3).
inline constexpr uint64_t kNetFeatureCsum = 1ull << 0;
inline constexpr uint64_t kNetFeatureGuestCsum = 1ull << 1;
inline constexpr uint64_t kNetFeatureMtu = 1ull << 3;
inline constexpr uint64_t kNetFeatureMac = 1ull << 5;
inline constexpr uint64_t kNetFeatureMrgRxbuf = 1ull << 15;
inline constexpr uint64_t kNetFeatureStatus = 1ull << 16;
inline constexpr uint64_t kNetFeatureCtrlVq = 1ull << 17;
inline constexpr uint64_t kNetFeatureCtrlRx = 1ull << 18;
inline constexpr uint64_t kNetFeatureCtrlRxExtra = 1ull << 20;
inline constexpr uint64_t kNetFeatureMq = 1ull << 22;
inline constexpr uint64_t kNetFeatureCtrlMacAddr = 1ull << 23;

// struct virtio_net_config (§5.1.4): the fields up to mtu; nothing later is offered.
inline constexpr uint32_t kNetCfgMac = 0;
inline constexpr uint32_t kNetCfgStatus = 6;
inline constexpr uint32_t kNetCfgMaxQueuePairs = 8;
inline constexpr uint32_t kNetCfgMtu = 10;
inline constexpr uint32_t kNetConfigSize = 12;
inline constexpr uint16_t kNetStatusLinkUp = 1;

// struct virtio_net_hdr_v1 (§5.1.6): flags, gso_type, le16 hdr_len, gso_size,
// csum_start, csum_offset, num_buffers.
inline constexpr uint32_t kNetHdrSize = 12;
inline constexpr uint8_t kNetHdrFlagNeedsCsum = 1;
inline constexpr uint8_t kNetHdrFlagDataValid = 2;
inline constexpr uint8_t kNetHdrGsoNone = 0;

// Control virtqueue (§5.1.6.5).
inline constexpr uint8_t kNetCtrlOk = 0;
inline constexpr uint8_t kNetCtrlErr = 1;
inline constexpr uint8_t kNetCtrlClassRx = 0;
inline constexpr uint8_t kNetCtrlRxPromisc = 0;
inline constexpr uint8_t kNetCtrlRxAllmulti = 1;
inline constexpr uint8_t kNetCtrlRxAlluni = 2;
inline constexpr uint8_t kNetCtrlRxNomulti = 3;
inline constexpr uint8_t kNetCtrlRxNouni = 4;
inline constexpr uint8_t kNetCtrlRxNobcast = 5;
inline constexpr uint8_t kNetCtrlClassMac = 1;
inline constexpr uint8_t kNetCtrlMacTableSet = 0;
inline constexpr uint8_t kNetCtrlMacAddrSet = 1;
inline constexpr uint8_t kNetCtrlClassMq = 4;
inline constexpr uint8_t kNetCtrlMqVqPairsSet = 0;

inline constexpr uint16_t kNetMaxQueueSize = 256;
inline constexpr uint16_t kNetDefaultMtu = 1500;
// Ethernet header plus one VLAN tag: a frame may be this much longer than the MTU.
inline constexpr uint32_t kNetFrameOverhead = 14 + 4;
inline constexpr uint32_t kNetMinFrame = 14;
// Chains or frames one queue moves per callback before it yields the loop
// (and re-kicks itself), so a guest that keeps refilling its rings cannot
// keep the other devices and the control socket waiting.
inline constexpr uint32_t kNetBurst = 256;
// A receive buffer's segment list larger than this is freed once used, so a
// guest posting chains of thousands of tiny descriptors cannot leave flint
// holding that much memory per ring slot (Linux uses at most ~19).
inline constexpr size_t kNetKeepSegments = 64;

class VirtioNet final : public VirtioDevice {
 public:
  // `config.mac` must be a unicast address other than all-zero (the VM picks
  // one first); `config.mtu` 0 means 1500. The backend decides whether a
  // vnet header travels and how many queue pairs exist: config.queues is
  // capped by backend->queue_pairs(). The backend is not started here.
  static absl::StatusOr<std::unique_ptr<VirtioNet>> Create(
      const NicConfig& config, std::unique_ptr<net::NetBackend> backend);
  // Stops the backend (on the loop, when it was started); the transport has
  // already reset the device.
  ~VirtioNet() override;

  // Replaces the backend at run time. Call from any thread but the event
  // loop's (the swap runs there through RunSync, and the old backend is
  // destroyed on the calling thread). Before the first Activate the new
  // backend simply takes the old one's place. Afterwards: the new backend is
  // started first; if that fails, or it has fewer queue pairs than the guest
  // uses, nothing changes and the error says why. Then the link goes down
  // (config interrupt), the old backend is stopped (it finishes a frame it
  // had half written), the new one takes over and the link comes up (config
  // interrupt). A TX frame the old backend refused (kBusy) goes to the new one.
  absl::Status SwapBackend(std::unique_ptr<net::NetBackend> backend);
  // The backend's Describe() as of its start, the last swap or the last
  // failure/restore event; safe from any thread.
  std::string BackendDescription() const;
  bool link_up() const;
  uint16_t max_queue_pairs() const { return max_pairs_; }

  std::string_view name() const override { return "virtio-net"; }
  uint16_t device_id() const override { return 1; }
  uint32_t pci_class() const override { return 0x020000; }  // network, Ethernet
  uint64_t features() const override { return features_; }
  // rx0, tx0, rx1, tx1, ..., then the control queue.
  uint16_t num_queues() const override { return static_cast<uint16_t>(2 * max_pairs_ + 1); }
  uint16_t max_queue_size() const override { return kNetMaxQueueSize; }
  uint32_t config_size() const override { return kNetConfigSize; }
  void ReadConfig(uint32_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint32_t offset, std::span<const uint8_t> data) override;
  absl::Status Activate(const ActivateContext& ctx) override;
  void Reset() override;
  // rx/tx frames and bytes, drops by reason (both directions), link, backend.
  std::string StatsLine() const override;

 private:
  struct RxQueue;
  struct TxQueue;
  struct CtrlQueue;
  struct Counters {
    std::atomic<uint64_t> rx_frames{0}, rx_bytes{0}, tx_frames{0}, tx_bytes{0}, drop_short{0},
        drop_long{0}, drop_bad_gso{0}, drop_bad_csum{0}, drop_no_rx_buffers{0}, drop_filtered{0},
        backend_errors{0}, tx_sw_csum{0}, tx_busy{0}, rx_pauses{0}, rx_notifies{0}, swaps{0},
        link_changes{0}, ctrl_err{0};
  };
  enum class TxVerdict { kSend, kDrop, kFail };

  VirtioNet(const NicConfig& config, std::unique_ptr<net::NetBackend> backend, uint16_t max_pairs);

  net::BackendEvents MakeEvents(uint64_t generation);
  absl::Status SwapOnLoop(std::unique_ptr<net::NetBackend> backend,
                          std::unique_ptr<net::NetBackend>* old);
  void RefreshDescription();
  void OnBackendFailed(const absl::Status& why, bool recovering);
  void OnBackendRestored();
  void SetLink(bool up);
  // Tells the backend whether the driver accepts partial checksums.
  void ApplyGuestCsum();
  // Whether frames may move at all: active, not broken, link up, backend on.
  bool Flowing() const;
  // Moves whatever can move now: every backend rx queue and every tx queue.
  void ServeAll();

  // RX.
  void OnRxNotify(RxQueue& q);
  void ServeRx(uint16_t backend_queue);
  RxQueue* RxTarget(uint16_t backend_queue);
  bool EnsureRxRoom(RxQueue& q);
  void DeliverFrame(RxQueue& q, size_t received);
  void PauseBackendRx(uint16_t backend_queue);
  void ResumeBackendRx(uint16_t backend_queue);

  // TX.
  void OnTxNotify(TxQueue& t);
  void OnTxReady(uint16_t backend_queue);
  void ProcessTx(TxQueue& t);
  TxVerdict CheckTx(TxQueue& t);
  net::SendResult SendPending(TxQueue& t);

  // Control queue.
  void ProcessCtrl();
  // Promiscuous, no tables, the configured address (device reset).
  void ResetRxFilter();
  // Copies rx_filter_'s state into rx_mode_/mac_table_ for StatsLine.
  void PublishRxFilter();
  bool HandleCtrl(const DescriptorChain& chain);  // false: NEEDS_RESET raised
  uint8_t CtrlCommand(uint8_t cls, uint8_t cmd, std::span<const Segment> data, uint64_t len);

  bool AddUsed(SplitQueue* ring, uint16_t index, uint16_t head, uint32_t len,
               bool* added, bool publish = true);
  void SignalIfNeeded(SplitQueue* ring, uint16_t index, bool* added);
  void Fail(const std::string& why);
  void StopServing();

  const std::array<uint8_t, 6> configured_mac_;
  const uint16_t mtu_;
  const uint16_t max_pairs_;
  const uint64_t features_;

  // Guest-visible configuration; read by vCPU threads, changed on the loop.
  mutable absl::Mutex config_mu_;
  std::array<uint8_t, 6> mac_ ABSL_GUARDED_BY(config_mu_);
  uint16_t status_ ABSL_GUARDED_BY(config_mu_) = kNetStatusLinkUp;

  // The backend. Before it is started (backend_loop_ null) it is replaced
  // under backend_mu_ by SwapBackend's caller; once started, only the loop
  // thread touches it.
  mutable absl::Mutex backend_mu_;
  EventLoop* backend_loop_ ABSL_GUARDED_BY(backend_mu_) = nullptr;
  std::string description_ ABSL_GUARDED_BY(backend_mu_);
  std::unique_ptr<net::NetBackend> backend_;

  // Event loop thread only.
  bool backend_started_ = false;
  uint64_t backend_gen_ = 0;      // events carry it; stale ones are ignored
  std::vector<bool> rx_paused_;   // per backend queue: PauseRx in force
  std::vector<bool> rx_serving_;  // per backend queue: ServeRx on the stack
  bool link_up_ = true;
  std::vector<std::unique_ptr<RxQueue>> rx_;  // max_pairs_ each
  std::vector<std::unique_ptr<TxQueue>> tx_;
  std::unique_ptr<CtrlQueue> ctrl_;
  std::vector<uint8_t> staging_;  // one received frame, vnet header in front
  EventLoop* loop_ = nullptr;
  Interrupts* interrupts_ = nullptr;
  uint64_t driver_features_ = 0;
  // VQ_PAIRS_SET; 1 until the driver asks for more. Atomic only for StatsLine.
  std::atomic<uint16_t> active_pairs_{1};
  bool active_ = false;
  bool failed_ = false;  // NEEDS_RESET raised: serve nothing until Reset()
  // Receive filtering the driver asked for (RX mode, MAC table, own
  // address); applied to every received frame before it takes a buffer.
  NetRxFilter rx_filter_;
  // Copies of rx_filter_'s state for StatsLine (any thread).
  std::atomic<uint8_t> rx_mode_{0};
  std::atomic<uint32_t> mac_table_{0};  // unicast entries << 16 | multicast entries

  Counters counters_;
};

}  // namespace flint::virtio
