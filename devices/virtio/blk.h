// virtio-blk (virtio 1.2 §5.2): a disk image served through one block I/O
// engine per virtqueue. Requests are parsed and answered on the event loop
// thread; the data moves between the disk and guest memory without a copy
// (except O_DIRECT with a misaligned guest buffer, which is bounced).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "block/disk_file.h"
#include "block/engine.h"
#include "devices/virtio/device.h"
#include "vmm/vm_config.h"

namespace flint::virtio {

// Feature bits (§5.2.3).
inline constexpr uint64_t kBlkFeatureSizeMax = 1ull << 1;
inline constexpr uint64_t kBlkFeatureSegMax = 1ull << 2;
inline constexpr uint64_t kBlkFeatureRo = 1ull << 5;
inline constexpr uint64_t kBlkFeatureBlkSize = 1ull << 6;
inline constexpr uint64_t kBlkFeatureFlush = 1ull << 9;
inline constexpr uint64_t kBlkFeatureMq = 1ull << 12;
inline constexpr uint64_t kBlkFeatureDiscard = 1ull << 13;
inline constexpr uint64_t kBlkFeatureWriteZeroes = 1ull << 14;

// Request types and status values (§5.2.6).
inline constexpr uint32_t kBlkTypeIn = 0;
inline constexpr uint32_t kBlkTypeOut = 1;
inline constexpr uint32_t kBlkTypeFlush = 4;
inline constexpr uint32_t kBlkTypeGetId = 8;
inline constexpr uint32_t kBlkTypeDiscard = 11;
inline constexpr uint32_t kBlkTypeWriteZeroes = 13;
inline constexpr uint8_t kBlkStatusOk = 0;
inline constexpr uint8_t kBlkStatusIoErr = 1;
inline constexpr uint8_t kBlkStatusUnsupp = 2;
inline constexpr uint32_t kBlkDiscardFlagUnmap = 1;

// Offsets into struct virtio_blk_config (§5.2.4).
inline constexpr uint32_t kBlkCfgCapacity = 0;
inline constexpr uint32_t kBlkCfgSizeMax = 8;
inline constexpr uint32_t kBlkCfgSegMax = 12;
inline constexpr uint32_t kBlkCfgBlkSize = 20;
inline constexpr uint32_t kBlkCfgNumQueues = 34;
inline constexpr uint32_t kBlkCfgMaxDiscardSectors = 36;
inline constexpr uint32_t kBlkCfgMaxDiscardSeg = 40;
inline constexpr uint32_t kBlkCfgDiscardSectorAlignment = 44;
inline constexpr uint32_t kBlkCfgMaxWriteZeroesSectors = 48;
inline constexpr uint32_t kBlkCfgMaxWriteZeroesSeg = 52;
inline constexpr uint32_t kBlkCfgWriteZeroesMayUnmap = 56;
inline constexpr uint32_t kBlkConfigSize = 60;  // through unused1; no secure erase, no zones

inline constexpr uint16_t kBlkMaxQueueSize = 256;
inline constexpr uint32_t kBlkSizeMax = 1u << 20;             // bytes per segment
inline constexpr uint32_t kBlkSegMax = kBlkMaxQueueSize - 2;  // data segments per request
inline constexpr uint32_t kBlkMaxDiscardSectors = 1u << 22;   // 2 GiB per request
inline constexpr uint32_t kBlkMaxWriteZeroesSectors = 1u << 22;

class VirtioBlk final : public VirtioDevice {
 public:
  // Opens the disk (DiskFile) and makes its engines (one per queue).
  // Errors name the option to change but not the path, which the caller
  // prefixes once.
  static absl::StatusOr<std::unique_ptr<VirtioBlk>> Create(const DiskConfig& config,
                                                           IoEngine engine);
  ~VirtioBlk() override;

  const char* engine_name() const;  // "io_uring" or "threads"
  std::string engine_note() const;  // why io_uring was not used; empty otherwise

  std::string_view name() const override { return "virtio-blk"; }
  uint16_t device_id() const override { return 2; }
  uint32_t pci_class() const override { return 0x018000; }  // mass storage, other
  uint64_t features() const override { return features_; }
  uint16_t num_queues() const override { return static_cast<uint16_t>(queues_.size()); }
  uint16_t max_queue_size() const override { return kBlkMaxQueueSize; }
  uint32_t config_size() const override { return kBlkConfigSize; }
  void ReadConfig(uint32_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint32_t offset, std::span<const uint8_t> data) override;
  absl::Status Activate(const ActivateContext& ctx) override;
  void Reset() override;
  std::string StatsLine() const override;

 private:
  struct Request;
  struct Queue;
  struct Counters {
    std::atomic<uint64_t> reads{0}, writes{0}, flushes{0}, get_ids{0}, discards{0}, write_zeroes{0},
        unknown{0}, bytes_read{0}, bytes_written{0}, ioerr{0}, unsupp{0}, bounced{0},
        in_flight_max{0};
  };

  VirtioBlk(const DiskConfig& config, block::DiskFile disk);

  void OnNotify(Queue& q);
  void OnCompletions(Queue& q);
  // Pops and starts requests until the ring is empty or the queue has no room.
  void ProcessQueue(Queue& q);
  // Starts one popped chain: queues an engine op or completes it at once.
  void StartRequest(Queue& q, const DescriptorChain& chain);
  void FinishRequest(Queue& q, uint32_t slot, int64_t result);
  void Complete(Queue& q, uint16_t head, uint8_t* status, uint8_t value, uint32_t used_len);
  void SignalIfNeeded(Queue& q);
  void Fail(const std::string& why);
  void StopServing();

  const std::string serial_;
  block::DiskFile disk_;
  const uint64_t capacity_sectors_;
  uint64_t features_ = 0;
  uint8_t config_[kBlkConfigSize] = {};  // immutable after Create: read without a lock
  IoEngine engine_kind_ = IoEngine::kThreads;
  std::string engine_note_;

  // Event loop thread only (Activate, Reset and the loop callbacks).
  std::vector<std::unique_ptr<Queue>> queues_;  // one per virtqueue, engines live here
  EventLoop* loop_ = nullptr;
  Interrupts* interrupts_ = nullptr;
  uint64_t driver_features_ = 0;
  bool active_ = false;
  bool failed_ = false;  // NEEDS_RESET raised: serve nothing until Reset()
  uint32_t in_flight_ = 0;

  Counters counters_;
};

}  // namespace flint::virtio
