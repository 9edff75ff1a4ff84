#include "vmm/devices/serial.h"

#include <unistd.h>

#include <cerrno>

namespace flint {
namespace {

// Register offsets.
constexpr uint64_t kData = 0;  // RBR/THR, or DLL with DLAB
constexpr uint64_t kIer = 1;   // or DLM with DLAB
constexpr uint64_t kIir = 2;   // read; FCR on write
constexpr uint64_t kLcr = 3;
constexpr uint64_t kMcr = 4;
constexpr uint64_t kLsr = 5;
constexpr uint64_t kMsr = 6;
constexpr uint64_t kScr = 7;

constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kIerRxData = 0x01;
constexpr uint8_t kIerThrEmpty = 0x02;
constexpr uint8_t kIirNone = 0x01;
constexpr uint8_t kIirThrEmpty = 0x02;
constexpr uint8_t kIirRxData = 0x04;
constexpr uint8_t kIirFifoEnabled = 0xc0;
constexpr uint8_t kFcrEnable = 0x01;
constexpr uint8_t kFcrClearRx = 0x02;
constexpr uint8_t kLsrDataReady = 0x01;
constexpr uint8_t kLsrThrEmpty = 0x20;
constexpr uint8_t kLsrTxEmpty = 0x40;
constexpr uint8_t kMcrDtr = 0x01, kMcrRts = 0x02, kMcrOut1 = 0x04, kMcrOut2 = 0x08;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kMsrCts = 0x10, kMsrDsr = 0x20, kMsrRi = 0x40, kMsrDcd = 0x80;
constexpr size_t kTxFlushAt = 1024;

void WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // console gone: output is dropped, the guest runs on
    off += static_cast<size_t>(n);
  }
}

}  // namespace

void Serial::Read(uint64_t offset, std::span<uint8_t> data) {
  absl::MutexLock l(&mu_);
  data[0] = ReadReg(offset);
  for (size_t i = 1; i < data.size(); ++i) data[i] = 0;
}

void Serial::Write(uint64_t offset, std::span<const uint8_t> data) {
  absl::MutexLock l(&mu_);
  WriteReg(offset, data[0]);
}

uint8_t Serial::ReadReg(uint64_t offset) {
  switch (offset) {
    case kData: {
      if (lcr_ & kLcrDlab) return dll_;
      if (rx_.empty()) return 0;
      uint8_t b = rx_.front();
      rx_.pop_front();
      UpdateIrq();
      return b;
    }
    case kIer:
      return (lcr_ & kLcrDlab) ? dlm_ : ier_;
    case kIir: {
      uint8_t iir = PendingIir();
      if (iir == kIirThrEmpty) {
        thr_empty_irq_ = false;  // reading IIR acknowledges THRE
        UpdateIrq();
      }
      return iir | ((fcr_ & kFcrEnable) ? kIirFifoEnabled : 0);
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr:
      return kLsrThrEmpty | kLsrTxEmpty | (rx_.empty() ? 0 : kLsrDataReady);
    case kMsr:
      if (mcr_ & kMcrLoop) {
        return ((mcr_ & kMcrRts) ? kMsrCts : 0) | ((mcr_ & kMcrDtr) ? kMsrDsr : 0) |
               ((mcr_ & kMcrOut1) ? kMsrRi : 0) | ((mcr_ & kMcrOut2) ? kMsrDcd : 0);
      }
      return kMsrDcd | kMsrDsr | kMsrCts;
    case kScr:
      return scr_;
    default:
      return 0xff;
  }
}

void Serial::WriteReg(uint64_t offset, uint8_t v) {
  switch (offset) {
    case kData:
      if (lcr_ & kLcrDlab) {
        dll_ = v;
        return;
      }
      if (mcr_ & kMcrLoop) {
        if (rx_.size() < kRxCapacity) rx_.push_back(v);
      } else {
        Transmit(v);
      }
      thr_empty_irq_ = true;
      UpdateIrq();
      return;
    case kIer:
      if (lcr_ & kLcrDlab) {
        dlm_ = v;
        return;
      }
      // Enabling the THRE interrupt while the holding register is empty
      // raises it at once (the transmitter is always ready here).
      if ((v & kIerThrEmpty) && !(ier_ & kIerThrEmpty)) thr_empty_irq_ = true;
      ier_ = v & 0x0f;
      UpdateIrq();
      return;
    case kIir:  // FCR
      if (v & kFcrClearRx) rx_.clear();
      fcr_ = v & (kFcrEnable | 0xc0);
      UpdateIrq();
      return;
    case kLcr:
      lcr_ = v;
      return;
    case kMcr:
      mcr_ = v & 0x1f;
      return;
    case kScr:
      scr_ = v;
      return;
    default:
      return;  // LSR and MSR are read-only
  }
}

void Serial::Transmit(uint8_t byte) {
  ++tx_bytes_;
  if (out_fd_ < 0) return;
  tx_buf_.push_back(static_cast<char>(byte));
  if (byte == '\n' || tx_buf_.size() >= kTxFlushAt) FlushLocked();
}

void Serial::FlushLocked() {
  if (tx_buf_.empty() || out_fd_ < 0) return;
  WriteAll(out_fd_, tx_buf_);
  tx_buf_.clear();
}

void Serial::Flush() {
  absl::MutexLock l(&mu_);
  FlushLocked();
}

uint8_t Serial::PendingIir() const {
  if ((ier_ & kIerRxData) && !rx_.empty()) return kIirRxData;
  if ((ier_ & kIerThrEmpty) && thr_empty_irq_) return kIirThrEmpty;
  return kIirNone;
}

void Serial::UpdateIrq() {
  bool level = PendingIir() != kIirNone;
  if (level != irq_level_) {
    irq_level_ = level;
    if (irq_ != nullptr) irq_->Set(level);
  }
}

size_t Serial::QueueInput(std::span<const uint8_t> bytes) {
  absl::MutexLock l(&mu_);
  size_t n = 0;
  while (n < bytes.size() && rx_.size() < kRxCapacity) rx_.push_back(bytes[n++]);
  if (n > 0) UpdateIrq();
  return n;
}

size_t Serial::RxSpace() const {
  absl::MutexLock l(&mu_);
  return kRxCapacity - rx_.size();
}

uint64_t Serial::tx_bytes() const {
  absl::MutexLock l(&mu_);
  return tx_bytes_;
}

}  // namespace flint
