// 16550A UART (the PC's COM1): transmit goes to a host fd, receive comes from
// QueueInput() (fed from stdin by the console thread), interrupts through
// an IrqLine. Registers per the National Semiconductor PC16550D datasheet.
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include "absl/synchronization/mutex.h"
#include "vmm/bus.h"
#include "vmm/devices/irq_line.h"

namespace flint {

class Serial : public BusDevice {
 public:
  static constexpr size_t kRxCapacity = 4096;

  // `out_fd` is not owned; -1 discards output.
  Serial(int out_fd, IrqLine* irq) : out_fd_(out_fd), irq_(irq) {}
  ~Serial() override { Flush(); }

  std::string_view name() const override { return "serial"; }
  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // Appends guest-bound bytes; returns how many fit (the rest is the
  // caller's to retry: nothing is dropped silently).
  size_t QueueInput(std::span<const uint8_t> bytes);
  size_t RxSpace() const;
  // Writes out buffered transmit bytes.
  void Flush();

  uint64_t tx_bytes() const;

 private:
  uint8_t ReadReg(uint64_t offset) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriteReg(uint64_t offset, uint8_t v) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Transmit(uint8_t byte) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint8_t PendingIir() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateIrq() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int out_fd_;
  IrqLine* const irq_;
  mutable absl::Mutex mu_;
  std::deque<uint8_t> rx_ ABSL_GUARDED_BY(mu_);
  std::string tx_buf_ ABSL_GUARDED_BY(mu_);
  uint64_t tx_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint8_t ier_ ABSL_GUARDED_BY(mu_) = 0;
  uint8_t lcr_ ABSL_GUARDED_BY(mu_) = 0;
  uint8_t mcr_ ABSL_GUARDED_BY(mu_) = 0;
  uint8_t scr_ ABSL_GUARDED_BY(mu_) = 0;
  uint8_t fcr_ ABSL_GUARDED_BY(mu_) = 0;
  uint8_t dll_ ABSL_GUARDED_BY(mu_) = 0x0c;  // 9600 baud at power-on
  uint8_t dlm_ ABSL_GUARDED_BY(mu_) = 0;
  bool thr_empty_irq_ ABSL_GUARDED_BY(mu_) = false;
  bool irq_level_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace flint
