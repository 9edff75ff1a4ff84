// flint test guest: the virtio-net programs (flint.prog=net-...). See
// README.md for what each does and the datagram formats the host-side
// servers (tests/integration/net_test.cc, bench/net_udp.py) check.
#include "tests/guest/guest.h"
#include "tests/guest/net.h"
#include "tests/guest/virtio.h"

namespace guest {

namespace {

using net::kSecond;

// Local UDP ports the programs send from (and receive echoes on).
constexpr u16 kEchoPort = 40000;
constexpr u16 kStreamPort = 40001;
constexpr u16 kBenchPort = 40002;
constexpr u16 kFilterPort = 40003;

// Stream datagrams: magic, sequence number, total length, FNV-1a of the
// bytes after the 16-byte header, then pattern bytes (seq * 31 + i) & 0xff.
// A reply of exactly the 4 bytes kStopMagic ends the stream.
constexpr u32 kStreamMagic = 0x534e4c46;  // "FLNS" little-endian
constexpr u32 kStopMagic = 0x514e4c46;    // "FLNQ"
constexpr u32 kStreamHdr = 16;

u32 fnv1a(const u8* p, u32 n) {
  u32 h = 2166136261u;
  for (u32 i = 0; i < n; ++i) h = (h ^ p[i]) * 16777619u;
  return h;
}

u16 cmdline_port(const char* prog) {
  const u64 port = cmdline_u64("flint.port", 0);
  if (port == 0 || port > 65535) {
    print(prog);
    print(": flint.port=PORT (the host server's port) is required\n");
    fail("missing flint.port");
  }
  return static_cast<u16>(port);
}

// Opens the NIC with the command line's options and waits for the link.
void net_up() {
  net::open(net::options_from_cmdline());
  if (!net::wait_link_up(5 * kSecond)) fail("net: link stays down");
}

void net_up_dhcp() {
  net_up();
  if (!net::dhcp()) fail("net: dhcp failed");
}

// ARPs for `ip`, prints `net: arp NAME mac=...`.
void arp_print(const char* name, u32 ip) {
  net::Mac m;
  if (!net::arp_resolve(ip, &m)) {
    print("net: no ARP reply from ");
    net::print_ip(ip);
    putc('\n');
    fail("net: arp failed");
  }
  print("net: arp ");
  print(name);
  print(" mac=");
  net::print_mac(m);
  putc('\n');
}

void print_counters() {
  const net::Counters& c = net::counters();
  print("net: counters rx_frames=");
  print_dec(c.rx_frames);
  print(" rx_dropped=");
  print_dec(c.rx_dropped);
  print(" rx_other_mac=");
  print_dec(c.rx_other_mac);
  print(" rx_multi_buffer=");
  print_dec(c.rx_multi_buffer);
  print(" rx_csum_partial=");
  print_dec(c.rx_csum_partial);
  print(" rx_csum_valid=");
  print_dec(c.rx_csum_valid);
  print(" udp_bad_csum=");
  print_dec(c.udp_bad_csum);
  print(" tcp_bad_csum=");
  print_dec(c.tcp_bad_csum);
  print(" tx_frames=");
  print_dec(c.tx_frames);
  putc('\n');
}

// ---- UDP echo (net-dhcp-udp, net-static-udp) -----------------------------------

struct Echo {
  bool got;
  u32 src_ip;
  u16 src_port;
  u32 len;
  u8 data[2048];
};
Echo g_echo;

void echo_handler(u32 src, u16 sport, u16, const u8* data, u32 len) {
  if (g_echo.got || len > sizeof(g_echo.data)) return;
  g_echo.src_ip = src;
  g_echo.src_port = sport;
  g_echo.len = len;
  memcpy(g_echo.data, data, len);
  g_echo.got = true;
}

// Sends `len` bytes of a known payload to ip:port and checks the echo
// (resends every second, three times at most).
void udp_echo(const char* who, u32 ip, u16 port, u32 len) {
  u8 payload[2048];
  const char* tag = "flint-udp-echo ";
  const u32 tag_len = static_cast<u32>(strlen(tag));
  for (u32 i = 0; i < len; ++i) {
    payload[i] = i < tag_len ? static_cast<u8>(tag[i]) : static_cast<u8>(i * 13 + len);
  }
  net::udp_bind(kEchoPort, echo_handler);
  for (int attempt = 0; attempt < 3; ++attempt) {
    g_echo.got = false;
    if (!net::udp_send(ip, kEchoPort, port, payload, len)) fail("net: udp send failed");
    const u64 start = rdtsc();
    while (!g_echo.got && rdtsc() - start < kSecond) {
      net::poll();
      cpu_relax();
    }
    if (g_echo.got) break;
    print(who);
    print(": no echo yet, sending again\n");
  }
  net::udp_unbind(kEchoPort);
  if (!g_echo.got) fail("net: no UDP echo");
  if (g_echo.src_ip != ip || g_echo.src_port != port) fail("net: the echo came from elsewhere");
  if (g_echo.len != len || !mem_eq(g_echo.data, payload, len)) {
    fail("net: the echo differs from what was sent");
  }
}

[[noreturn]] void prog_net_dhcp_udp_impl() {
  const u16 port = cmdline_port("net-dhcp-udp");
  net_up_dhcp();
  const virtio::Device& d = net::device();
  if (d.features & net::kFCtrlRx) {
    const u8 off = 0;
    if (!net::ctrl_command(net::kCtrlRx, net::kCtrlRxPromisc, &off, 1)) {
      fail("net: control queue refused RX_PROMISC off");
    }
    print("net: ctrl rx promisc=0 ok\n");
  }
  if (d.features & net::kFCtrlMacAddr) {
    if (!net::ctrl_command(net::kCtrlMac, net::kCtrlMacAddrSet, net::mac().b, 6)) {
      fail("net: control queue refused MAC_ADDR_SET");
    }
    print("net: ctrl mac ok\n");
  }
  const u32 gw = net::config().gateway;
  arp_print("gw", gw);
  // A small datagram, then the largest one frame carries: with a small
  // flint.rxbuf and MRG_RXBUF its echo spans several receive buffers.
  udp_echo("net-dhcp-udp", gw, port, 64);
  const u32 big = net::udp_max_payload() < 1400 ? net::udp_max_payload() : 1400;
  udp_echo("net-dhcp-udp", gw, port, big);
  print("net: udp echo ok sizes=64,");
  print_dec(big);
  putc('\n');
  print_counters();
  exit(0);
}

// Brings the NIC up with flint.ip (and flint.mask, default /24); returns
// flint.peer.
u32 net_up_static(u32* ip_out) {
  u32 ip, peer, mask = 0xffffff00u;
  if (!net::cmdline_ip("flint.ip", &ip) || !net::cmdline_ip("flint.peer", &peer)) {
    fail("net: this program needs flint.ip=A.B.C.D and flint.peer=A.B.C.D");
  }
  net::cmdline_ip("flint.mask", &mask);
  net_up();
  net::set_static(ip, mask, 0);
  *ip_out = ip;
  return peer;
}

[[noreturn]] void prog_net_static_udp_impl() {
  const u16 port = cmdline_port("net-static-udp");
  u32 ip;
  const u32 peer = net_up_static(&ip);
  print("net: static ip=");
  net::print_ip(ip);
  print(" peer=");
  net::print_ip(peer);
  putc('\n');
  arp_print("peer", peer);
  udp_echo("net-static-udp", peer, port, 64);
  udp_echo("net-static-udp", peer, port, 1400);
  print("net: static udp ok\n");
  print_counters();
  exit(0);
}

// ---- TCP (net-tcp) ------------------------------------------------------------

// What the guest sends: byte i is (i * 31 + (i >> 8) * 17 + 5) & 0xff; what
// it expects back: (i * 7 + (i >> 8) * 3 + 3) & 0xff. The (i >> 8) terms make
// data repeated at another offset (a resend as new data) differ.
u8 tcp_out_byte(u64 i) { return static_cast<u8>(i * 31 + (i >> 8) * 17 + 5); }
u8 tcp_in_byte(u64 i) { return static_cast<u8>(i * 7 + (i >> 8) * 3 + 3); }

[[noreturn]] void prog_net_tcp_impl() {
  const u16 port = cmdline_port("net-tcp");
  const u64 bytes = cmdline_u64("flint.bytes", 65536);
  const u64 expect = cmdline_u64("flint.rbytes", 32768);
  if (bytes > (16u << 20)) fail("net-tcp: flint.bytes is at most 16 MiB");
  net_up_dhcp();
  u8* out = net::alloc(bytes);
  for (u64 i = 0; i < bytes; ++i) out[i] = tcp_out_byte(i);
  const u32 gw = net::config().gateway;
  if (!net::tcp_connect(gw, port)) fail("net: tcp connect failed");
  print("net: tcp connected\n");
  // The server reads flint.bytes, answers and closes; the guest closes
  // after it has read everything. (passt 2023-03 resends data it already
  // sent when the guest half-closes first, so the guest does not.)
  net::tcp_write(out, bytes);
  u64 received = 0;
  u8 chunk[2048];
  u64 last_progress = rdtsc();
  bool fin_queued = false;
  while (!(net::tcp_all_acked() && net::tcp_peer_closed() && fin_queued)) {
    if (!fin_queued && net::tcp_all_acked() && net::tcp_peer_closed()) {
      net::tcp_fin();
      fin_queued = true;
    }
    if (!net::tcp_service()) fail("net: tcp connection failed");
    const u64 n = net::tcp_read(chunk, sizeof(chunk));
    for (u64 i = 0; i < n; ++i) {
      if (chunk[i] != tcp_in_byte(received + i)) {
        print("net: tcp byte ");
        print_dec(received + i);
        print(" is 0x");
        print_hex(chunk[i]);
        putc('\n');
        fail("net: tcp received data differs from the pattern");
      }
    }
    received += n;
    if (n > 0) last_progress = rdtsc();
    else if (rdtsc() - last_progress > 10 * kSecond) fail("net: tcp made no progress for 10 s");
    cpu_relax();
  }
  print("net: tcp ok sent=");
  print_dec(bytes);
  print(" received=");
  print_dec(received);
  print(" retransmits=");
  print_dec(net::tcp_retransmits());
  putc('\n');
  if (received != expect) fail("net: tcp received a different byte count than flint.rbytes");
  print_counters();
  exit(0);
}

// ---- net-udp-stream -------------------------------------------------------------

struct Stream {
  u64 echoed, bad, stops;
};
Stream g_stream;

void stream_handler(u32, u16, u16, const u8* data, u32 len) {
  u32 magic = 0;
  if (len >= 4) memcpy(&magic, data, 4);
  if (len == 4 && magic == kStopMagic) {
    ++g_stream.stops;
    return;
  }
  u32 total = 0, sum = 0;
  if (len >= kStreamHdr) {
    memcpy(&total, data + 8, 4);
    memcpy(&sum, data + 12, 4);
  }
  if (len < kStreamHdr || magic != kStreamMagic || total != len ||
      sum != fnv1a(data + kStreamHdr, len - kStreamHdr)) {
    ++g_stream.bad;
    return;
  }
  ++g_stream.echoed;
}

u32 stream_datagram(u8* p, u32 seq) {
  const u32 len = 64 + (seq % 7) * 100;
  for (u32 i = kStreamHdr; i < len; ++i) p[i] = static_cast<u8>(seq * 31 + i);
  const u32 sum = fnv1a(p + kStreamHdr, len - kStreamHdr);
  memcpy(p + 0, &kStreamMagic, 4);
  memcpy(p + 4, &seq, 4);
  memcpy(p + 8, &len, 4);
  memcpy(p + 12, &sum, 4);
  return len;
}

void stream_summary(const char* how, u64 sent, u64 send_failures, u64 link_changes) {
  print("net: stream sent=");
  print_dec(sent);
  print(" echoed=");
  print_dec(g_stream.echoed);
  print(" bad=");
  print_dec(g_stream.bad);
  print(" send_failures=");
  print_dec(send_failures);
  print(" link_changes=");
  print_dec(link_changes);
  print(" end=");
  print(how);
  putc('\n');
}

[[noreturn]] void prog_net_udp_stream_impl() {
  const u16 port = cmdline_port("net-udp-stream");
  const u64 count = cmdline_u64("flint.count", 0);    // 0: until the server says stop
  const u64 gap = cmdline_u64("flint.gap", 3000000);  // TSC cycles between datagrams
  const u64 max_seconds = cmdline_u64("flint.maxtime", 60);
  net_up_dhcp();
  const u32 gw = net::config().gateway;
  arp_print("gw", gw);
  net::udp_bind(kStreamPort, stream_handler);
  u8 buf[1024];
  u64 sent = 0, send_failures = 0, link_changes = 0;
  const u64 start = rdtsc();
  u64 next = start, last_send = start;
  for (;;) {
    const u64 now = rdtsc();
    if (now - start > max_seconds * kSecond) {
      stream_summary("timeout", sent, send_failures, link_changes);
      fail("net: stream ran past flint.maxtime");
    }
    // The link is checked when a datagram is due (a config read is an exit).
    if (now >= next && !net::link_up()) {
      ++link_changes;
      print("net: stream link down after sent=");
      print_dec(sent);
      putc('\n');
      if (!net::wait_link_up(30 * kSecond)) fail("net: link stayed down for 30 s");
      print("net: stream link up\n");
      // The backend behind the link may be a new one: learn the gateway again.
      net::arp_flush();
      net::Mac m;
      if (!net::arp_resolve(gw, &m)) ++send_failures;
      next = rdtsc();
      continue;
    }
    if (g_stream.stops > 0) break;
    if (count != 0 && sent >= count) {
      // Done sending: wait a little for the last echoes.
      if (g_stream.echoed >= sent || now - last_send > kSecond) break;
    } else if (now >= next) {
      const u32 len = stream_datagram(buf, static_cast<u32>(sent));
      if (net::udp_send(gw, kStreamPort, port, buf, len)) {
        ++sent;
        last_send = now;
        if (sent % 1000 == 0) {
          print("net: stream progress sent=");
          print_dec(sent);
          print(" echoed=");
          print_dec(g_stream.echoed);
          putc('\n');
        }
      } else {
        ++send_failures;  // no ARP answer: the backend may be changing
      }
      next = now - next > 100 * gap ? now + gap : next + gap;
    }
    net::poll();
    cpu_relax();
  }
  stream_summary(g_stream.stops > 0 ? "stop" : "count", sent, send_failures, link_changes);
  if (g_stream.bad != 0) fail("net: stream echoes were corrupted");
  exit(0);
}

// ---- net-hostile ------------------------------------------------------------------

// Queues one malformed transmit chain and waits (bounded) for the device to
// complete it or to ask for a reset. Returns true when it dropped the frame
// and kept working; after NEEDS_RESET, resets and sets the device up again.
bool malformed(const char* what, const virtio::Buf& b) {
  virtio::Device& d = net::device();
  const u64 want = net::counters().tx_raw_completed + 1;
  if (net::tx_raw(&b, 1) < 0) fail("net-hostile: tx queue full");
  const u64 start = rdtsc();
  bool completed = false, needs_reset = false;
  while (!completed && !needs_reset && rdtsc() - start < 2 * kSecond) {
    net::poll();
    completed = net::counters().tx_raw_completed >= want;
    needs_reset = virtio::status(d) & virtio::kStatusNeedsReset;
    cpu_relax();
  }
  print("net-hostile: ");
  print(what);
  print(completed ? ": completed" : ": not completed");
  print(", device_status=0x");
  print_hex(virtio::status(d));
  putc('\n');
  if (needs_reset || (virtio::status(d) & virtio::kStatusNeedsReset)) {
    print("net-hostile: the device asked for a reset; resetting\n");
    net::reopen();
    if (!net::wait_link_up(5 * kSecond)) fail("net-hostile: link down after the reset");
    return false;
  }
  if (!completed) fail("net-hostile: the device kept a malformed chain");
  return true;
}

// A broadcast frame of `len` bytes (header in front) in `p`.
virtio::Buf frame_buf(u8* p, u32 len, bool device_writes) {
  memset(p, 0, sizeof(net::VnetHdr) + len);
  u8* f = p + sizeof(net::VnetHdr);
  if (len >= 12) {
    memset(f, 0xff, 6);
    memcpy(f + 6, net::mac().b, 6);
  }
  if (len >= 14) {
    f[12] = 0x88;  // a local-experimental ethertype nobody handles
    f[13] = 0xb5;
  }
  return virtio::Buf{reinterpret_cast<u64>(p), static_cast<u32>(sizeof(net::VnetHdr) + len),
                     device_writes};
}

[[noreturn]] void prog_net_hostile_impl() {
  net_up();
  virtio::Device& d = net::device();
  const u16 dev_mtu = (d.features & net::kFMtu) ? virtio::cfg16(d, 10) : 1500;
  u8* mem = net::alloc(128 * 1024);
  bool dropped = true;
  // A frame longer than the MTU (plus Ethernet header) allows.
  const u32 big_len = dev_mtu + net::kEthHdr + 64;
  print("net-hostile: frame of ");
  print_dec(big_len);
  print(" bytes (mtu ");
  print_dec(dev_mtu);
  print(")\n");
  dropped &= malformed("too long", frame_buf(mem, big_len, false));
  // Shorter than an Ethernet header.
  dropped &= malformed("runt", frame_buf(mem, 6, false));
  // A chain holding only the virtio-net header: no frame at all.
  dropped &= malformed("header only", frame_buf(mem, 0, false));
  if (!net::dhcp_discover_offer(5 * kSecond)) fail("net-hostile: no DHCP offer after the drops");
  if (dropped) print("net-hostile: drops ok\n");
  else print("net-hostile: survived the malformed frames (with a reset)\n");

  // A transmit chain with a device-writable descriptor: a driver error the
  // device should answer with NEEDS_RESET.
  const virtio::Buf w = frame_buf(mem, 60, true);
  if (net::tx_raw(&w, 1) < 0) fail("net-hostile: tx queue full");
  print("net-hostile: sent a transmit chain with a device-writable descriptor\n");
  const bool needs_reset = virtio::wait_status(d, virtio::kStatusNeedsReset, 2 * kSecond);
  print("net-hostile: device_status=0x");
  print_hex(virtio::status(d));
  putc('\n');
  print(needs_reset ? "net-hostile: needs_reset\n" : "net-hostile: no needs_reset\n");
  net::reopen();
  if (!net::wait_link_up(5 * kSecond)) fail("net-hostile: link down after the reset");
  if (!net::dhcp_discover_offer(5 * kSecond)) fail("net-hostile: no DHCP offer after the reset");
  print("net-hostile: recovered\n");
  exit(needs_reset && dropped ? 0 : 2);
}

// ---- net-bench ------------------------------------------------------------------------

void print_bench(const char* mode, u64 size, u64 packets, u64 cycles) {
  print("RESULT name=net-");
  print(mode);
  print(" size=");
  print_dec(size);
  print(" packets=");
  print_dec(packets);
  print(" bytes=");
  print_dec(packets * size);
  print(" cycles=");
  print_dec(cycles);
  putc('\n');
}

struct BenchRx {
  u64 packets, first_tsc, last_tsc;
};
BenchRx g_bench_rx;

void bench_rx_handler(u32, u16, u16, const u8*, u32) {
  const u64 now = rdtsc();
  if (g_bench_rx.packets++ == 0) g_bench_rx.first_tsc = now;
  g_bench_rx.last_tsc = now;
}

[[noreturn]] void prog_net_bench_impl() {
  const char* mode = "tx";
  usize mode_len = 2;
  cmdline_get("flint.mode", &mode, &mode_len);
  const bool tx = str_eq(mode, mode_len, "tx");
  if (!tx && !str_eq(mode, mode_len, "rx")) fail("net-bench: flint.mode must be tx or rx");
  const u16 port = cmdline_port("net-bench");
  const u64 size = cmdline_u64("flint.size", 64);
  const u64 packets = cmdline_u64("flint.packets", 100000);
  if (size < 16 || size > 1472) fail("net-bench: flint.size must be 16..1472");
  // The peer: the DHCP gateway (passt), or flint.peer with flint.ip (TAP).
  u32 ip, peer = 0, mask = 0xffffff00u;
  if (net::cmdline_ip("flint.ip", &ip)) {
    if (!net::cmdline_ip("flint.peer", &peer)) fail("net-bench: flint.ip needs flint.peer");
    net::cmdline_ip("flint.mask", &mask);
    net_up();
    net::set_static(ip, mask, 0);
  } else {
    net_up_dhcp();
    peer = net::config().gateway;
  }
  if (size > net::udp_max_payload()) fail("net-bench: flint.size exceeds one frame");
  if (tx) {
    arp_print("peer", peer);
    u8 buf[1500];
    for (u64 i = 0; i < size; ++i) buf[i] = static_cast<u8>(i);
    print("net-bench: ready\n");
    const u64 t0 = rdtsc();
    for (u64 i = 0; i < packets; ++i) {
      memcpy(buf, &i, 8);
      if (!net::udp_send(peer, kBenchPort, port, buf, static_cast<u32>(size), false)) {
        fail("net-bench: send failed");
      }
      if ((i & 31) == 31) net::tx_kick();
    }
    net::tx_kick();
    const u64 start = rdtsc();
    while (net::tx_in_flight() != 0) {
      if (rdtsc() - start > 5 * kSecond) fail("net-bench: transmit buffers never came back");
      net::tx_reclaim();
      cpu_relax();
    }
    print_bench("tx", size, packets, rdtsc() - t0);
    exit(0);
  }
  // rx: the host floods the forwarded port; count until `packets` arrived or
  // nothing came for 2 s. With flint.ctlport the guest also asks for the
  // flood with a datagram "FLNB" to peer:ctlport, every 0.5 s until one
  // arrives (a flood that starts before the driver is up can starve a VMM).
  const u64 ctlport = cmdline_u64("flint.ctlport", 0);
  net::udp_bind(port, bench_rx_handler);
  print("net-bench: ready\n");
  const u64 wait_start = rdtsc();
  u64 last_seen = 0, seen = 0, last_ask = 0;
  while (g_bench_rx.packets < packets) {
    net::poll();
    const u64 now = rdtsc();
    if (ctlport != 0 && seen == 0 && (last_ask == 0 || now - last_ask > kSecond / 2)) {
      net::udp_send(peer, kBenchPort, static_cast<u16>(ctlport), "FLNB", 4);
      last_ask = now;
    }
    if (g_bench_rx.packets != seen) {
      seen = g_bench_rx.packets;
      last_seen = now;
    }
    if (seen == 0 && now - wait_start > 20 * kSecond) fail("net-bench: no datagram in 20 s");
    if (seen != 0 && now - last_seen > 2 * kSecond) break;
  }
  print_bench("rx", size, g_bench_rx.packets, g_bench_rx.last_tsc - g_bench_rx.first_tsc);
  print_counters();
  exit(0);
}

// ---- net-filter ------------------------------------------------------------------------

// Receive filtering as the driver sees it. Static address on a TAP (flint.ip,
// flint.peer); unless flint.promisc=1 it turns promiscuous mode off through
// the control queue. Then it sends "FLT?" to peer:flint.port every 0.5 s
// until the host answers "END"; the host sends frames to a foreign MAC
// first. The counters show what got through: the driver drops frames for
// other addresses itself (rx_other_mac), so with the device filtering they
// never reach it.
bool g_filter_end;

void filter_handler(u32, u16, u16, const u8* data, u32 len) {
  if (len == 3 && mem_eq(data, "END", 3)) g_filter_end = true;
}

[[noreturn]] void prog_net_filter_impl() {
  const u16 port = cmdline_port("net-filter");
  u32 ip;
  const u32 peer = net_up_static(&ip);
  if (cmdline_u64("flint.promisc", 0) == 0) {
    if (!(net::device().features & net::kFCtrlRx)) fail("net-filter: CTRL_RX not offered");
    const u8 off = 0;
    if (!net::ctrl_command(net::kCtrlRx, net::kCtrlRxPromisc, &off, 1)) {
      fail("net-filter: control queue refused RX_PROMISC off");
    }
    print("net-filter: promisc=0\n");
  } else {
    print("net-filter: promisc=1\n");
  }
  arp_print("peer", peer);
  // Frames delivered before the command took effect are still in the ring:
  // let them pass first, then count from here.
  for (const u64 t = rdtsc(); rdtsc() - t < kSecond / 5;) net::poll();
  const u64 other_before = net::counters().rx_other_mac;
  net::udp_bind(kFilterPort, filter_handler);
  const u64 start = rdtsc();
  u64 last_ask = 0;
  while (!g_filter_end) {
    net::poll();
    const u64 now = rdtsc();
    if (now - start > 10 * kSecond) fail("net-filter: no END from the host in 10 s");
    if (last_ask == 0 || now - last_ask > kSecond / 2) {
      net::udp_send(peer, kFilterPort, port, "FLT?", 4);
      last_ask = now;
    }
  }
  print("net-filter: end other_mac=");
  print_dec(net::counters().rx_other_mac - other_before);
  putc('\n');
  print_counters();
  exit(0);
}

}  // namespace

void prog_net_dhcp_udp() { prog_net_dhcp_udp_impl(); }
void prog_net_static_udp() { prog_net_static_udp_impl(); }
void prog_net_tcp() { prog_net_tcp_impl(); }
void prog_net_udp_stream() { prog_net_udp_stream_impl(); }
void prog_net_hostile() { prog_net_hostile_impl(); }
void prog_net_bench() { prog_net_bench_impl(); }
void prog_net_filter() { prog_net_filter_impl(); }

}  // namespace guest
