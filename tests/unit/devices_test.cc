#include <gtest/gtest.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "vmm/devices/acpi_pm.h"
#include "vmm/devices/cmos.h"
#include "vmm/devices/debug_exit.h"
#include "vmm/devices/i8042.h"
#include "vmm/devices/power_button.h"
#include "vmm/devices/serial.h"
#include "vmm/layout.h"

namespace flint {
namespace {

class FakeIrq : public IrqLine {
 public:
  void Set(bool level) override { levels.push_back(level); }
  std::vector<bool> levels;
};

uint8_t In(BusDevice& d, uint64_t off) {
  uint8_t v = 0;
  d.Read(off, std::span<uint8_t>(&v, 1));
  return v;
}
void Out(BusDevice& d, uint64_t off, uint8_t v) { d.Write(off, std::span<const uint8_t>(&v, 1)); }

struct Pipe {
  Pipe() { EXPECT_EQ(pipe(fds), 0); }
  ~Pipe() { close(fds[0]); close(fds[1]); }
  std::string Drain() {
    std::string s(4096, '\0');
    ssize_t n = read(fds[0], s.data(), s.size());
    s.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return s;
  }
  int fds[2];
};

TEST(Serial, TransmitsLinesToTheOutputFd) {
  Pipe p;
  FakeIrq irq;
  Serial s(p.fds[1], &irq);
  for (char c : std::string("hi\n")) Out(s, 0, static_cast<uint8_t>(c));
  EXPECT_EQ(p.Drain(), "hi\n");
  Out(s, 0, 'x');  // buffered until newline or Flush
  s.Flush();
  EXPECT_EQ(p.Drain(), "x");
  EXPECT_EQ(s.tx_bytes(), 4u);
}

TEST(Serial, LineStatusAndReceive) {
  FakeIrq irq;
  Serial s(-1, &irq);
  EXPECT_EQ(In(s, 5) & 0x61, 0x60);  // THR empty, TX empty, no data
  const uint8_t in[] = {'a', 'b'};
  EXPECT_EQ(s.QueueInput(in), 2u);
  EXPECT_EQ(In(s, 5) & 0x01, 0x01);
  EXPECT_EQ(In(s, 0), 'a');
  EXPECT_EQ(In(s, 0), 'b');
  EXPECT_EQ(In(s, 5) & 0x01, 0x00);
}

TEST(Serial, ReceiveBufferAppliesBackPressure) {
  Serial s(-1, nullptr);
  std::vector<uint8_t> big(Serial::kRxCapacity + 10, 'z');
  EXPECT_EQ(s.QueueInput(big), Serial::kRxCapacity);
  EXPECT_EQ(s.RxSpace(), 0u);
  In(s, 0);
  EXPECT_EQ(s.RxSpace(), 1u);
}

TEST(Serial, RxInterruptRaisedAndClearedWithIir) {
  FakeIrq irq;
  Serial s(-1, &irq);
  Out(s, 1, 0x01);  // IER: received data available
  EXPECT_EQ(In(s, 2) & 0x0f, 0x01);  // no interrupt pending
  const uint8_t in[] = {'q'};
  s.QueueInput(in);
  ASSERT_FALSE(irq.levels.empty());
  EXPECT_TRUE(irq.levels.back());
  EXPECT_EQ(In(s, 2) & 0x0f, 0x04);
  EXPECT_EQ(In(s, 0), 'q');
  EXPECT_FALSE(irq.levels.back());
}

TEST(Serial, ThrEmptyInterruptAcknowledgedByIirRead) {
  FakeIrq irq;
  Serial s(-1, &irq);
  Out(s, 1, 0x02);  // enabling THRE with an empty THR raises it at once
  EXPECT_TRUE(irq.levels.back());
  EXPECT_EQ(In(s, 2) & 0x0f, 0x02);
  EXPECT_FALSE(irq.levels.back());
  EXPECT_EQ(In(s, 2) & 0x0f, 0x01);
  Out(s, 0, 'x');
  EXPECT_TRUE(irq.levels.back());
}

TEST(Serial, DivisorLatchScratchFifoAndLoopback) {
  Serial s(-1, nullptr);
  Out(s, 3, 0x80);  // DLAB
  Out(s, 0, 0x01);
  Out(s, 1, 0x00);
  EXPECT_EQ(In(s, 0), 0x01);
  Out(s, 3, 0x03);  // 8N1
  EXPECT_EQ(In(s, 3), 0x03);
  Out(s, 7, 0x5a);
  EXPECT_EQ(In(s, 7), 0x5a);
  Out(s, 2, 0x07);  // FIFO on: a 16550A reports it in IIR bits 7:6
  EXPECT_EQ(In(s, 2) & 0xc0, 0xc0);
  // Loopback, as Linux's 8250 probe uses it: MCR outputs show in MSR and
  // transmitted bytes come back as received ones.
  Out(s, 4, 0x10 | 0x0a);  // LOOP | RTS | OUT2
  EXPECT_EQ(In(s, 6) & 0xf0, 0x90);
  Out(s, 0, 'L');
  EXPECT_EQ(In(s, 0), 'L');
  EXPECT_EQ(s.tx_bytes(), 0u);
}

TEST(DebugExit, StatusMatchesQemuIsaDebugExit) {
  std::optional<StopReason> got;
  DebugExit d([&](StopReason r) { got = r; });
  Out(d, 0, 0);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->kind, StopKind::kDebugExit);
  EXPECT_EQ(got->exit_status, 1);
  Out(d, 0, 5);
  EXPECT_EQ(got->exit_status, 11);
  Out(d, 0, 0x7f);
  EXPECT_EQ(got->exit_status, 0xff);
  uint8_t four[4] = {0x80, 0, 0, 0};  // (0x80 << 1) | 1 truncated to 8 bits
  d.Write(0, four);
  EXPECT_EQ(got->exit_status, 1);
}

TEST(AcpiPm, PowersOffOnlyForS5WithSleepEnable) {
  std::optional<StopReason> got;
  AcpiPm pm([&](StopReason r) { got = r; });
  Out(pm, 0, 5 << 2);  // S5 without SLP_EN
  EXPECT_FALSE(got);
  Out(pm, 0, (3 << 2) | 0x20);  // S3: not supported, ignored
  EXPECT_FALSE(got);
  Out(pm, 1, (5 << 2) | 0x20);  // status register, not control
  EXPECT_FALSE(got);
  Out(pm, 0, (5 << 2) | 0x20);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->kind, StopKind::kPowerOff);
  EXPECT_EQ(got->exit_status, 0);
}

TEST(PowerButton, PressRaisesTheLineUntilTheGuestReadsTheEvent) {
  FakeIrq irq;
  PowerButton b(&irq);
  EXPECT_EQ(In(b, 0), 0);
  EXPECT_TRUE(irq.levels.empty()) << "no event: the line is never touched";
  b.Press();
  ASSERT_EQ(irq.levels, std::vector<bool>{true});
  b.Press();  // a second press before the guest looked: one event, line still up
  EXPECT_EQ(irq.levels, std::vector<bool>{true});
  EXPECT_EQ(b.pending(), layout::kGedEventPowerButton);
  EXPECT_EQ(In(b, 0), layout::kGedEventPowerButton);
  EXPECT_EQ(irq.levels, (std::vector<bool>{true, false})) << "the read clears and lowers";
  EXPECT_EQ(In(b, 0), 0);
  EXPECT_EQ(irq.levels.size(), 2u);
  b.Press();  // a later press is a new event
  EXPECT_EQ(irq.levels, (std::vector<bool>{true, false, true}));
  EXPECT_EQ(In(b, 0), layout::kGedEventPowerButton);
}

// A guest may poke the register block with any width at any offset: writes
// do nothing, only a read covering byte 0 consumes the event, and bytes
// beyond it read zero.
TEST(PowerButton, HostileAccessesNeitherLoseNorInventEvents) {
  FakeIrq irq;
  PowerButton b(&irq);
  b.Press();
  for (size_t width : {1u, 2u, 4u, 8u}) {
    for (uint64_t off : {0u, 1u, 3u, 7u}) {
      std::vector<uint8_t> ones(width, 0xff);
      b.Write(off, ones);
      std::vector<uint8_t> got(width, 0xaa);
      if (off != 0) {
        b.Read(off, got);
        EXPECT_EQ(got, std::vector<uint8_t>(width, 0)) << "width " << width << " offset " << off;
      }
    }
  }
  EXPECT_EQ(b.pending(), layout::kGedEventPowerButton);
  EXPECT_EQ(irq.levels, std::vector<bool>{true});
  std::vector<uint8_t> wide(8, 0xaa);
  b.Read(0, wide);
  EXPECT_EQ(wide, (std::vector<uint8_t>{layout::kGedEventPowerButton, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(irq.levels.back(), false);
  std::vector<uint8_t> none;
  b.Read(0, none);  // a zero-length access (the bus never makes one) is harmless
  EXPECT_EQ(b.pending(), 0);
}

// Presses from an API thread race reads from a vCPU: however they
// interleave, the line ends up asserted exactly when an event is pending,
// and every press is seen by a read that follows it.
TEST(PowerButton, LineFollowsThePendingEventUnderRacingPressesAndReads) {
  FakeIrq irq;  // only ever called under the device's lock
  PowerButton b(&irq);
  constexpr int kRounds = 20000;
  int seen = 0;
  std::thread presser([&] {
    for (int i = 0; i < kRounds; ++i) b.Press();
  });
  for (int i = 0; i < kRounds; ++i) seen += In(b, 0) != 0;
  presser.join();
  ASSERT_FALSE(irq.levels.empty());
  EXPECT_EQ(irq.levels.back(), b.pending() != 0);
  for (size_t i = 1; i < irq.levels.size(); ++i) {
    ASSERT_NE(irq.levels[i], irq.levels[i - 1]) << "the line is only set on a change, at " << i;
  }
  seen += In(b, 0) != 0;  // the last press, if no read followed it yet
  EXPECT_GE(seen, 1);
  EXPECT_EQ(b.pending(), 0);
  EXPECT_FALSE(irq.levels.back());
}

TEST(I8042, ResetCommandRequestsReset) {
  std::optional<StopReason> got;
  I8042 kbd([&](StopReason r) { got = r; });
  EXPECT_EQ(In(kbd, 4), 0);  // ready for a command
  Out(kbd, 4, 0xd1);
  Out(kbd, 0, 0xfe);  // data port, not a command
  EXPECT_FALSE(got);
  Out(kbd, 4, 0xfe);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->kind, StopKind::kReset);
}

TEST(Cmos, ReportsClockInBcdAndBinary) {
  // 2026-11-22 19:07:09 UTC, a Sunday.
  Cmos c([] { return static_cast<std::time_t>(1795374429); });
  auto reg = [&](uint8_t r) {
    Out(c, 0, r);
    return In(c, 1);
  };
  EXPECT_EQ(reg(0x00), 0x09);
  EXPECT_EQ(reg(0x02), 0x07);
  EXPECT_EQ(reg(0x04), 0x19);
  EXPECT_EQ(reg(0x07), 0x22);
  EXPECT_EQ(reg(0x08), 0x11);
  EXPECT_EQ(reg(0x09), 0x26);
  EXPECT_EQ(reg(0x32), 0x20);
  EXPECT_EQ(reg(0x06), 0x01);
  EXPECT_EQ(reg(0x0a) & 0x80, 0);      // never mid-update
  EXPECT_EQ(reg(0x0d), 0x80);          // valid RAM
  Out(c, 0, 0x0b);
  Out(c, 1, 0x06);                     // binary, 24h
  EXPECT_EQ(reg(0x04), 19);
  EXPECT_EQ(reg(0x09), 26);
  Out(c, 0, 0x0b);
  Out(c, 1, 0x00);                     // BCD, 12h: 19h is 7 PM
  EXPECT_EQ(reg(0x04), 0x87);
  Out(c, 0, 0x80 | 0x40);              // NMI-mask bit is not part of the index
  Out(c, 1, 0xab);
  EXPECT_EQ(reg(0x40), 0xab);
}

}  // namespace
}  // namespace flint
