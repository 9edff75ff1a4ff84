// flint test guest: a polled virtio-net driver and a tiny IPv4 stack.
// See net.h for the shape; README.md for what the programs do with it.
#include "tests/guest/net.h"

#include "tests/guest/pci.h"

namespace guest::net {

namespace {

using virtio::Buf;
using virtio::Queue;

constexpr u16 kVirtioNet = 1;
constexpr u16 kRxQ = 0, kTxQ = 1, kCtrlQ = 2;

// Device configuration (§5.1.4).
constexpr u32 kCfgMac = 0;
constexpr u32 kCfgStatus = 6;
constexpr u32 kCfgMtu = 10;
constexpr u16 kStatusLinkUp = 1;

constexpr u16 kEthArp = 0x0806;
constexpr u16 kEthIp = 0x0800;
constexpr u8 kProtoTcp = 6;
constexpr u8 kProtoUdp = 17;
constexpr u32 kBroadcast = 0xffffffffu;

// Buffers live in RAM from 32 MiB (above the blk programs' arena at 16 MiB,
// below the 64 MiB the tests give at least): only net programs touch them.
constexpr u64 kArenaBase = 32ull << 20;
constexpr u32 kRxBufMax = 4096;
constexpr u32 kAssemblySize = 65562 + 4096;  // a merged frame: 64 KiB + headers
constexpr u32 kTcpRing = 65536;
constexpr u16 kRawSlot = 0xffff;  // tx_slot_of for a tx_raw() chain

// ---- Byte order and checksums ------------------------------------------------

inline void put16(u8* p, u16 v) {
  p[0] = static_cast<u8>(v >> 8);
  p[1] = static_cast<u8>(v);
}
inline void put32(u8* p, u32 v) {
  put16(p, static_cast<u16>(v >> 16));
  put16(p + 2, static_cast<u16>(v));
}
inline u16 get16(const u8* p) { return static_cast<u16>(p[0] << 8 | p[1]); }
inline u32 get32(const u8* p) { return static_cast<u32>(get16(p)) << 16 | get16(p + 2); }

// One's-complement sum of big-endian 16-bit words (RFC 1071), unfolded.
u64 csum_add(u64 sum, const u8* p, u32 n) {
  u32 i = 0;
  for (; i + 1 < n; i += 2) sum += static_cast<u32>(p[i] << 8 | p[i + 1]);
  if (i < n) sum += static_cast<u32>(p[i] << 8);
  return sum;
}
u16 csum_fold(u64 sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<u16>(sum);
}
u64 pseudo_sum(u32 src, u32 dst, u8 proto, u32 len) {
  return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto + len;
}

bool mac_eq(const u8* a, const u8* b) { return mem_eq(a, b, 6); }
constexpr u8 kBroadcastMac[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

// ---- State ----------------------------------------------------------------------

struct ArpEntry {
  u32 ip;
  Mac mac;
  bool valid;
};
constexpr u32 kArpEntries = 16;

struct UdpBinding {
  u16 port;
  UdpHandler handler;
};
constexpr u32 kUdpBindings = 8;

struct alignas(16) CtrlCmd {
  u8 cls, cmd;
  u8 pad[14];
  u8 data[64];
  volatile u8 ack;
};

enum class TcpState : u8 { kClosed, kSynSent, kEstablished };

struct Tcp {
  TcpState state;
  bool failed;
  u32 rip;
  u16 lport, rport;
  Mac rmac;
  u32 iss, snd_una, snd_nxt, snd_max, snd_wnd;
  u32 rcv_nxt;
  u16 mss;
  const u8* data;
  u64 data_len;
  bool want_fin, fin_sent, fin_acked, peer_fin, ack_now;
  u64 rto, rto_at, retransmits;
  u32 tries;
  u8* ring;
  u32 ring_head, ring_len, adv_wnd;
  u16 next_port;
};

// One global with no constructor to run (the guest has no .init_array);
// open() fills it in.
struct Nic {
  virtio::Device dev;
  Options opt;
  bool ctrl;  // CTRL_VQ negotiated
  Mac mac;
  u16 mtu;
  u8* rx_mem;  // rx_count buffers of opt.rx_buf_size
  u16 rx_count;
  u16 rx_slot_of[virtio::kMaxQueueSize];  // head → rx buffer
  u8* tx_mem;                             // tx_count slots of kTxSlotSize
  u16 tx_count;
  u16 tx_free[virtio::kMaxQueueSize];
  u16 ntx_free;
  u16 tx_slot_of[virtio::kMaxQueueSize];  // head → tx slot
  u8* assembly;
  CtrlCmd ctrl_cmd;
  Counters counters;
  Config config;
  ArpEntry arp[kArpEntries];
  u32 arp_next;
  UdpBinding udp[kUdpBindings];
  u16 ip_id;
  bool in_poll;
  Tcp tcp;
};
static_assert(__is_trivially_constructible(Nic));
Nic g_nic;
Arena g_arena{kArenaBase, "net (the guest needs at least 64 MiB)", 0};

u8* arena(u64 bytes) { return arena_alloc(&g_arena, bytes); }

Queue& rxq() { return g_nic.dev.queue[kRxQ]; }
Queue& txq() { return g_nic.dev.queue[kTxQ]; }

// ---- Receive buffers ---------------------------------------------------------

u8* rx_buf(u16 slot) { return g_nic.rx_mem + static_cast<u64>(slot) * g_nic.opt.rx_buf_size; }

void rx_post(u16 slot) {
  const Buf b{reinterpret_cast<u64>(rx_buf(slot)), g_nic.opt.rx_buf_size, true};
  const int head = rxq().add(&b, 1);
  if (head < 0) fail("net: receive queue has no free descriptor for a buffer");
  g_nic.rx_slot_of[head] = slot;
}

// Takes the next used receive buffer: its slot and the bytes written.
bool rx_take(u16* slot, u32* len) {
  u32 id;
  if (!rxq().poll(&id, len)) return false;
  *slot = g_nic.rx_slot_of[id];
  if (*len > g_nic.opt.rx_buf_size) {
    print("net: used len ");
    print_dec(*len);
    print(" > buffer ");
    print_dec(g_nic.opt.rx_buf_size);
    putc('\n');
    fail("net: device wrote more than the receive buffer holds");
  }
  return true;
}

void deliver(const VnetHdr& h, const u8* frame, u32 len);

// ---- Link layer -----------------------------------------------------------------

// Builds an Ethernet header; returns the payload start.
u8* eth_header(u8* frame, const u8* dst, u16 type) {
  memcpy(frame, dst, 6);
  memcpy(frame + 6, g_nic.mac.b, 6);
  put16(frame + 12, type);
  return frame + kEthHdr;
}

void arp_insert(u32 ip, const u8* mac) {
  for (ArpEntry& e : g_nic.arp) {
    if (e.valid && e.ip == ip) {
      memcpy(e.mac.b, mac, 6);
      return;
    }
  }
  ArpEntry& e = g_nic.arp[g_nic.arp_next++ % kArpEntries];
  e.ip = ip;
  memcpy(e.mac.b, mac, 6);
  e.valid = true;
}

bool arp_lookup(u32 ip, Mac* out) {
  for (const ArpEntry& e : g_nic.arp) {
    if (e.valid && e.ip == ip) {
      *out = e.mac;
      return true;
    }
  }
  return false;
}

void arp_send(u16 op, const u8* dst_mac, const u8* target_mac, u32 target_ip) {
  u8* f = tx_alloc();
  u8* a = eth_header(f, dst_mac, kEthArp);
  put16(a + 0, 1);       // Ethernet
  put16(a + 2, kEthIp);  // IPv4
  a[4] = 6;
  a[5] = 4;
  put16(a + 6, op);
  memcpy(a + 8, g_nic.mac.b, 6);
  put32(a + 14, g_nic.config.configured ? g_nic.config.ip : 0);
  memcpy(a + 18, target_mac, 6);
  put32(a + 24, target_ip);
  memset(a + 28, 0, 18);  // pad to the 60-byte minimum
  tx_submit(f, kEthHdr + 28 + 18);
}

void arp_input(const u8* a, u32 n) {
  if (n < 28 || get16(a) != 1 || get16(a + 2) != kEthIp || a[4] != 6 || a[5] != 4) return;
  const u16 op = get16(a + 6);
  const u32 spa = get32(a + 14), tpa = get32(a + 24);
  if (spa != 0) arp_insert(spa, a + 8);
  if (op == 1 && g_nic.config.configured && tpa == g_nic.config.ip) {
    arp_send(2, a + 8, a + 8, spa);
    ++g_nic.counters.arp_replies_sent;
  }
}

// ---- IPv4 -----------------------------------------------------------------------

bool on_link(u32 ip) {
  const Config& c = g_nic.config;
  return c.mask != 0 && (ip & c.mask) == (c.ip & c.mask);
}

// The next hop's MAC for `dst`.
bool next_hop_mac(u32 dst, Mac* out) {
  const Config& c = g_nic.config;
  if (dst == kBroadcast || (c.mask != 0 && dst == (c.ip | ~c.mask))) {
    memcpy(out->b, kBroadcastMac, 6);
    return true;
  }
  if (!c.configured) return false;
  const u32 hop = on_link(dst) || c.gateway == 0 ? dst : c.gateway;
  return arp_resolve(hop, out, 2 * kSecond);
}

// Writes an IPv4 header for `payload` bytes; returns the payload start.
u8* ip_header(u8* p, u32 dst, u8 proto, u32 payload) {
  const u32 src = g_nic.config.configured ? g_nic.config.ip : 0;
  p[0] = 0x45;
  p[1] = 0;
  put16(p + 2, static_cast<u16>(kIpHdr + payload));
  put16(p + 4, g_nic.ip_id++);
  put16(p + 6, 0x4000);  // DF: this stack never fragments
  p[8] = 64;
  p[9] = proto;
  put16(p + 10, 0);
  put32(p + 12, src);
  put32(p + 16, dst);
  put16(p + 10, static_cast<u16>(~csum_fold(csum_add(0, p, kIpHdr))));
  return p + kIpHdr;
}

// The L4 checksum of a received segment is good, or the device vouched for
// it (DATA_VALID), or it is partial because the host never computed it
// (NEEDS_CSUM: the packet did not cross a wire).
bool l4_csum_ok(const VnetHdr& h, u32 src, u32 dst, u8 proto, const u8* seg, u32 len) {
  if (h.flags & kHdrNeedsCsum) {
    ++g_nic.counters.rx_csum_partial;
    return true;
  }
  if (h.flags & kHdrDataValid) {
    ++g_nic.counters.rx_csum_valid;
    return true;
  }
  return csum_fold(csum_add(pseudo_sum(src, dst, proto, len), seg, len)) == 0xffff;
}

void udp_input(const VnetHdr& h, u32 src, u32 dst, const u8* u, u32 n);
void tcp_input(const VnetHdr& h, u32 src, u32 dst, const u8* t, u32 n);

void ip_input(const VnetHdr& h, const u8* p, u32 n) {
  if (n < kIpHdr || (p[0] >> 4) != 4) return;
  const u32 ihl = (p[0] & 0xf) * 4u;
  const u32 total = get16(p + 2);
  if (ihl < kIpHdr || total < ihl || total > n) return;
  if (csum_fold(csum_add(0, p, ihl)) != 0xffff) return;
  if (get16(p + 6) & 0x3fff) return;  // a fragment: never reassembled
  const u32 src = get32(p + 12), dst = get32(p + 16);
  const Config& c = g_nic.config;
  // Before DHCP completes any UDP datagram may be the server's reply.
  const bool ours = c.configured ? dst == c.ip || dst == kBroadcast ||
                                       (c.mask != 0 && dst == (c.ip | ~c.mask))
                                 : p[9] == kProtoUdp;
  if (!ours) return;
  if (p[9] == kProtoUdp) udp_input(h, src, dst, p + ihl, total - ihl);
  else if (p[9] == kProtoTcp) tcp_input(h, src, dst, p + ihl, total - ihl);
}

void deliver(const VnetHdr& h, const u8* frame, u32 len) {
  Counters& k = g_nic.counters;
  ++k.rx_frames;
  k.rx_bytes += len;
  if (len < kEthHdr) {
    ++k.rx_dropped;
    return;
  }
  if (!mac_eq(frame, g_nic.mac.b) && !mac_eq(frame, kBroadcastMac)) {
    ++k.rx_dropped;
    ++k.rx_other_mac;
    return;
  }
  const u16 type = get16(frame + 12);
  if (type == kEthArp) arp_input(frame + kEthHdr, len - kEthHdr);
  else if (type == kEthIp) ip_input(h, frame + kEthHdr, len - kEthHdr);
  else ++k.rx_dropped;
}

// ---- UDP ------------------------------------------------------------------------

void udp_input(const VnetHdr& h, u32 src, u32 dst, const u8* u, u32 n) {
  if (n < kUdpHdr) return;
  const u32 len = get16(u + 4);
  if (len < kUdpHdr || len > n) return;
  if (get16(u + 6) != 0 && !l4_csum_ok(h, src, dst, kProtoUdp, u, len)) {
    ++g_nic.counters.udp_bad_csum;
    return;
  }
  ++g_nic.counters.udp_rx;
  const u16 dport = get16(u + 2);
  for (const UdpBinding& b : g_nic.udp) {
    if (b.handler != nullptr && b.port == dport) {
      b.handler(src, get16(u), dport, u + kUdpHdr, len - kUdpHdr);
      return;
    }
  }
}

// ---- TCP ------------------------------------------------------------------------

constexpr u8 kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10;
constexpr u32 kTcpMaxWindow = 32768;  // bytes in flight, whatever the peer offers
constexpr u64 kRtoInitial = kSecond / 4;
constexpr u64 kRtoMax = 2 * kSecond;
constexpr u32 kTcpMaxTries = 8;

inline bool seq_lt(u32 a, u32 b) {
  return static_cast<i64>(static_cast<__INT32_TYPE__>(a - b)) < 0;
}
inline bool seq_le(u32 a, u32 b) { return a == b || seq_lt(a, b); }

u32 tcp_window() {
  const u32 free = kTcpRing - g_nic.tcp.ring_len;
  return free > 65535 ? 65535 : free;
}

void tcp_segment(u32 seq, u8 flags, const u8* payload, u32 len) {
  Tcp& t = g_nic.tcp;
  const u32 opt = (flags & kSyn) ? 4 : 0;
  u8* f = tx_alloc();
  u8* s = ip_header(eth_header(f, t.rmac.b, kEthIp), t.rip, kProtoTcp, kTcpHdr + opt + len);
  put16(s + 0, t.lport);
  put16(s + 2, t.rport);
  put32(s + 4, seq);
  put32(s + 8, (flags & kAck) ? t.rcv_nxt : 0);
  s[12] = static_cast<u8>(((kTcpHdr + opt) / 4) << 4);
  s[13] = flags;
  t.adv_wnd = tcp_window();
  put16(s + 14, static_cast<u16>(t.adv_wnd));
  put16(s + 18, 0);
  if (opt) {
    s[20] = 2;  // MSS
    s[21] = 4;
    put16(s + 22, static_cast<u16>(mtu() - kIpHdr - kTcpHdr));
  }
  if (len) memcpy(s + kTcpHdr + opt, payload, len);
  const u32 seg = kTcpHdr + opt + len;
  put16(s + 16, csum_fold(pseudo_sum(g_nic.config.ip, t.rip, kProtoTcp, seg)));
  tx_submit(f, kEthHdr + kIpHdr + seg, kEthHdr + kIpHdr, 16);
  if (flags & kAck) t.ack_now = false;
}

void tcp_arm_timer() {
  Tcp& t = g_nic.tcp;
  if (t.rto_at == 0) t.rto_at = rdtsc() + t.rto;
}

// Sends what the window allows: data, then the FIN; a bare ACK if one is owed.
void tcp_output() {
  Tcp& t = g_nic.tcp;
  if (t.state != TcpState::kEstablished) return;
  const u32 first = t.iss + 1;
  for (;;) {
    const u64 off = t.snd_nxt - first;
    const u32 in_flight = t.snd_nxt - t.snd_una;
    u32 wnd = t.snd_wnd < kTcpMaxWindow ? t.snd_wnd : kTcpMaxWindow;
    if (wnd == 0 && in_flight == 0) wnd = 1;  // zero-window probe (resent by the timer)
    if (off < t.data_len) {
      if (in_flight >= wnd) break;
      u64 n = t.data_len - off;
      if (n > t.mss) n = t.mss;
      if (n > wnd - in_flight) n = wnd - in_flight;
      const bool last = off + n == t.data_len;
      tcp_segment(t.snd_nxt, kAck | (last ? kPsh : 0), t.data + off, static_cast<u32>(n));
      t.snd_nxt += static_cast<u32>(n);
    } else if (t.want_fin && !t.fin_sent) {
      tcp_segment(t.snd_nxt, kAck | kFin, nullptr, 0);
      t.snd_nxt += 1;
      t.fin_sent = true;
    } else {
      break;
    }
    if (seq_lt(t.snd_max, t.snd_nxt)) t.snd_max = t.snd_nxt;
    tcp_arm_timer();
  }
  if (t.ack_now) tcp_segment(t.snd_nxt, kAck, nullptr, 0);
}

void tcp_timer() {
  Tcp& t = g_nic.tcp;
  if (t.rto_at == 0 || rdtsc() < t.rto_at) return;
  if (++t.tries > kTcpMaxTries) {
    print("net: tcp: no acknowledgement after ");
    print_dec(kTcpMaxTries);
    print(" retransmissions\n");
    t.failed = true;
    return;
  }
  ++t.retransmits;
  t.rto = t.rto * 2 > kRtoMax ? kRtoMax : t.rto * 2;
  t.rto_at = 0;
  if (t.state == TcpState::kSynSent) {
    tcp_segment(t.iss, kSyn, nullptr, 0);
  } else {
    // Go back to the oldest unacknowledged byte and send everything again.
    t.snd_nxt = t.snd_una;
    if (t.fin_sent && !t.fin_acked) t.fin_sent = false;
  }
  tcp_arm_timer();
}

void tcp_input(const VnetHdr& h, u32 src, u32 dst, const u8* s, u32 n) {
  Tcp& t = g_nic.tcp;
  if (n < kTcpHdr) return;
  if (!l4_csum_ok(h, src, dst, kProtoTcp, s, n)) {
    ++g_nic.counters.tcp_bad_csum;
    return;
  }
  ++g_nic.counters.tcp_rx;
  if (t.state == TcpState::kClosed || src != t.rip || get16(s) != t.rport ||
      get16(s + 2) != t.lport) {
    return;
  }
  const u32 seq = get32(s + 4), ack = get32(s + 8);
  const u32 hlen = (s[12] >> 4) * 4u;
  const u8 flags = s[13];
  if (hlen < kTcpHdr || hlen > n) return;
  const u8* payload = s + hlen;
  const u32 plen = n - hlen;

  if (t.state == TcpState::kSynSent) {
    if ((flags & kRst) && (flags & kAck) && ack == t.iss + 1) {
      print("net: tcp: connection refused (RST)\n");
      t.failed = true;
      t.state = TcpState::kClosed;
      return;
    }
    if ((flags & (kSyn | kAck)) != (kSyn | kAck) || ack != t.iss + 1) return;
    t.rcv_nxt = seq + 1;
    t.snd_una = t.snd_nxt = t.snd_max = ack;
    t.snd_wnd = get16(s + 14);
    t.mss = 536;  // RFC 879's default unless the peer says
    for (u32 i = kTcpHdr; i + 1 < hlen;) {
      const u8 kind = s[i];
      if (kind == 0) break;
      if (kind == 1) {
        ++i;
        continue;
      }
      const u8 olen = s[i + 1];
      if (olen < 2 || i + olen > hlen) break;
      if (kind == 2 && olen == 4) t.mss = get16(s + i + 2);
      i += olen;
    }
    const u16 ours = static_cast<u16>(mtu() - kIpHdr - kTcpHdr);
    if (t.mss > ours) t.mss = ours;
    if (t.mss < 64) t.mss = 64;
    t.state = TcpState::kEstablished;
    t.rto_at = 0;
    t.tries = 0;
    t.rto = kRtoInitial;
    t.ack_now = true;
    return;
  }

  if (flags & kRst) {
    if (seq_le(t.rcv_nxt, seq) && seq_lt(seq, t.rcv_nxt + t.adv_wnd + 1)) {
      print("net: tcp: connection reset by the peer\n");
      t.failed = true;
      t.state = TcpState::kClosed;
    }
    return;
  }
  if (flags & kAck) {
    if (seq_lt(t.snd_una, ack) && seq_le(ack, t.snd_max)) {
      t.snd_una = ack;
      if (seq_lt(t.snd_nxt, t.snd_una)) t.snd_nxt = t.snd_una;
      const u32 fin_seq = t.iss + 1 + static_cast<u32>(t.data_len);
      if (t.want_fin && ack == fin_seq + 1) {
        t.fin_acked = true;
        t.fin_sent = true;
      }
      t.tries = 0;
      t.rto = kRtoInitial;
      t.rto_at = 0;
      if (t.snd_una != t.snd_max) tcp_arm_timer();
    }
    if (seq_le(t.snd_una, ack) && seq_le(ack, t.snd_max)) t.snd_wnd = get16(s + 14);
  }
  if (plen > 0 || (flags & (kFin | kSyn))) {
    if (seq == t.rcv_nxt && !t.peer_fin) {
      const u32 room = kTcpRing - t.ring_len;
      const u32 take = plen < room ? plen : room;
      for (u32 i = 0; i < take; ++i) {
        t.ring[(t.ring_head + t.ring_len + i) % kTcpRing] = payload[i];
      }
      t.ring_len += take;
      t.rcv_nxt += take;
      if ((flags & kFin) && take == plen) {
        t.rcv_nxt += 1;
        t.peer_fin = true;
      }
    }
    t.ack_now = true;  // in order or not: say where we are
  }
}

// ---- DHCP -----------------------------------------------------------------------

constexpr u16 kDhcpClient = 68, kDhcpServer = 67;
constexpr u8 kDhcpDiscover = 1, kDhcpOffer = 2, kDhcpRequest = 3, kDhcpAck = 5, kDhcpNak = 6;

struct DhcpState {
  u32 xid;
  u8 got_type;  // the latest reply's message type; 0 = none yet
  u32 yiaddr, server, mask, router, lease;
};
DhcpState g_dhcp;

void dhcp_handler(u32, u16, u16, const u8* m, u32 n) {
  if (n < 240 || m[0] != 2 || get32(m + 4) != g_dhcp.xid) return;
  if (!mac_eq(m + 28, g_nic.mac.b) || get32(m + 236) != 0x63825363) return;
  u8 type = 0;
  u32 mask = 0, router = 0, lease = 0, server = 0;
  for (u32 i = 240; i < n;) {
    const u8 code = m[i];
    if (code == 255) break;
    if (code == 0) {
      ++i;
      continue;
    }
    if (i + 2 > n || i + 2 + m[i + 1] > n) break;
    const u8 len = m[i + 1];
    const u8* v = m + i + 2;
    if (code == 53 && len >= 1) type = v[0];
    if (code == 1 && len >= 4) mask = get32(v);
    if (code == 3 && len >= 4) router = get32(v);
    if (code == 51 && len >= 4) lease = get32(v);
    if (code == 54 && len >= 4) server = get32(v);
    i += 2u + len;
  }
  if (type == 0) return;
  g_dhcp.got_type = type;
  g_dhcp.yiaddr = get32(m + 16);
  g_dhcp.server = server;
  g_dhcp.mask = mask;
  g_dhcp.router = router;
  g_dhcp.lease = lease;
}

void dhcp_send(u8 type) {
  u8 m[300];
  memset(m, 0, sizeof(m));
  m[0] = 1;  // BOOTREQUEST
  m[1] = 1;
  m[2] = 6;
  put32(m + 4, g_dhcp.xid);
  put16(m + 10, 0x8000);  // broadcast replies: we have no address yet
  memcpy(m + 28, g_nic.mac.b, 6);
  put32(m + 236, 0x63825363);
  u8* o = m + 240;
  *o++ = 53;
  *o++ = 1;
  *o++ = type;
  *o++ = 55;  // parameter request list: subnet mask, router, lease time
  *o++ = 3;
  *o++ = 1;
  *o++ = 3;
  *o++ = 51;
  if (type == kDhcpRequest) {
    *o++ = 50;
    *o++ = 4;
    put32(o, g_dhcp.yiaddr);
    o += 4;
    *o++ = 54;
    *o++ = 4;
    put32(o, g_dhcp.server);
    o += 4;
  }
  *o++ = 255;
  if (!udp_send(kBroadcast, kDhcpClient, kDhcpServer, m, sizeof(m))) {
    fail("net: dhcp: could not send");
  }
}

// Sends `type` every 0.5 s until a reply of one of the wanted types arrives
// or `deadline` passes. Returns the reply's type, 0 on timeout.
u8 dhcp_exchange(u8 type, u8 want1, u8 want2, u64 deadline) {
  while (rdtsc() < deadline) {
    g_dhcp.got_type = 0;
    dhcp_send(type);
    const u64 resend = rdtsc() + kSecond / 2;
    while (rdtsc() < resend && rdtsc() < deadline) {
      poll();
      if (g_dhcp.got_type == want1 || (want2 != 0 && g_dhcp.got_type == want2)) {
        return g_dhcp.got_type;
      }
      cpu_relax();
    }
  }
  return 0;
}

u32 random32() { return static_cast<u32>(rdtsc() * 0x9e3779b97f4a7c15ull >> 32); }

}  // namespace

// ---- Driver -----------------------------------------------------------------------

Options options_from_cmdline() {
  Options o{};
  o.mrg_rxbuf = cmdline_u64("flint.mrg", 1) != 0;
  o.rx_buf_size = static_cast<u32>(cmdline_u64("flint.rxbuf", 2048));
  o.tx_csum = cmdline_u64("flint.txcsum", 0) != 0;
  o.guest_csum = cmdline_u64("flint.guestcsum", 1) != 0;
  o.ctrl = cmdline_u64("flint.ctrl", 1) != 0;
  o.event_idx = cmdline_u64("flint.event_idx", 1) != 0;
  o.tx_split = cmdline_u64("flint.txsplit", 0) != 0;
  return o;
}

void open(const Options& o) {
  Nic& n = g_nic;
  if (o.rx_buf_size < 256 || o.rx_buf_size > kRxBufMax) fail("net: flint.rxbuf must be 256..4096");
  if (!o.mrg_rxbuf && o.rx_buf_size < sizeof(VnetHdr) + 1514) {
    fail("net: without MRG_RXBUF a receive buffer must hold a whole frame (flint.rxbuf >= 1526)");
  }
  const bool first = n.rx_mem == nullptr;
  if (first) {
    if (pci::access() == pci::Access::kNone && pci::init() == pci::Access::kNone) {
      fail("net: no PCI configuration access");
    }
    if (!virtio::probe(kVirtioNet, 0, &n.dev)) fail("net: no virtio-net PCI function on bus 0");
    if (n.dev.device_cfg == 0) fail("net: no device configuration capability");
    n.dev.mem = reinterpret_cast<Queue::Memory*>(arena(3 * sizeof(Queue::Memory)));
    n.rx_mem = arena(static_cast<u64>(virtio::kMaxQueueSize) * kRxBufMax);
    n.tx_mem = arena(static_cast<u64>(virtio::kMaxQueueSize) * kTxSlotSize);
    n.assembly = arena(kAssemblySize);
    n.tcp.ring = arena(kTcpRing);
    print("net: pci ");
    pci::print_bdf(n.dev.fn);
    print(" id 1af4:");
    print_hex(n.dev.fn.device);
    print(" common=0x");
    print_hex(n.dev.common);
    print(" notify=0x");
    print_hex(n.dev.notify);
    putc('\n');
  }
  n.opt = o;
  virtio::Device& d = n.dev;
  const u64 offered = virtio::offered_features(&d);
  n.ctrl = o.ctrl && (offered & kFCtrlVq);
  u64 wanted = kFMac | kFStatus | kFMtu;
  if (o.mrg_rxbuf) wanted |= kFMrgRxbuf;
  if (o.tx_csum) wanted |= kFCsum;
  if (o.guest_csum) wanted |= kFGuestCsum;
  if (n.ctrl) wanted |= kFCtrlVq | kFCtrlRx | kFCtrlMacAddr;
  if (o.event_idx) wanted |= virtio::kFEventIdx;
  virtio::init(&d, virtio::Setup{.wanted = wanted, .queues = static_cast<u16>(n.ctrl ? 3 : 2)});

  if (d.features & kFMac) {
    for (u32 i = 0; i < 6; ++i) n.mac.b[i] = virtio::cfg8(d, kCfgMac + i);
  } else {
    const u8 fallback[6] = {0x52, 0x54, 0x00, 0xfe, 0x00, 0x01};
    memcpy(n.mac.b, fallback, 6);
  }
  n.mtu = 1500;
  const u16 dev_mtu = (d.features & kFMtu) ? virtio::cfg16(d, kCfgMtu) : 0;
  if (dev_mtu != 0 && dev_mtu < n.mtu) n.mtu = dev_mtu;
  if (n.mtu < 576) fail("net: device MTU below 576");

  // Receive buffers: one per descriptor, every descriptor of the queue.
  n.rx_count = rxq().size();
  for (u16 i = 0; i < n.rx_count; ++i) rx_post(i);
  rxq().kick();
  n.tx_count = txq().size();
  n.ntx_free = 0;
  for (u16 i = n.tx_count; i > 0; --i) n.tx_free[n.ntx_free++] = static_cast<u16>(i - 1);

  print("net: mac=");
  print_mac(n.mac);
  print(" mtu=");
  print_dec(n.mtu);
  if (dev_mtu != 0) {
    print(" device_mtu=");
    print_dec(dev_mtu);
  }
  print(" link=");
  print(link_up() ? "up" : "down");
  print(" features=0x");
  print_hex(d.features);
  print(" mrg_rxbuf=");
  print_dec((d.features & kFMrgRxbuf) ? 1 : 0);
  print(" csum=");
  print_dec((d.features & kFCsum) ? 1 : 0);
  print(" guest_csum=");
  print_dec((d.features & kFGuestCsum) ? 1 : 0);
  print(" ctrl=");
  print_dec(n.ctrl ? 1 : 0);
  print(" event_idx=");
  print_dec((d.features & virtio::kFEventIdx) ? 1 : 0);
  print(" rxbuf=");
  print_dec(o.rx_buf_size);
  print(" queue=");
  print_dec(rxq().size());
  putc('\n');
}

void reopen() { open(g_nic.opt); }

virtio::Device& device() { return g_nic.dev; }
const Options& options() { return g_nic.opt; }
const Mac& mac() { return g_nic.mac; }
u16 mtu() { return g_nic.mtu; }
const Counters& counters() { return g_nic.counters; }

bool link_up() {
  if (!(g_nic.dev.features & kFStatus)) return true;
  return virtio::cfg16(g_nic.dev, kCfgStatus) & kStatusLinkUp;
}

bool wait_link_up(u64 cycles) {
  const u64 start = rdtsc();
  while (!link_up()) {
    if (rdtsc() - start > cycles) return false;
    poll();  // keep receive buffers flowing; the device may still hand some back
    cpu_relax();
  }
  return true;
}

u32 tx_reclaim() {
  Nic& n = g_nic;
  u32 id, len, got = 0;
  while (txq().poll(&id, &len)) {
    if (n.tx_slot_of[id] == kRawSlot) ++n.counters.tx_raw_completed;
    else n.tx_free[n.ntx_free++] = n.tx_slot_of[id];
    ++got;
  }
  return got;
}

int tx_raw(const Buf* bufs, u32 nb) {
  const int head = txq().add(bufs, nb);
  if (head < 0) return -1;
  g_nic.tx_slot_of[head] = kRawSlot;
  txq().kick();
  return head;
}

u8* alloc(u64 bytes) { return arena(bytes); }

u32 tx_in_flight() { return static_cast<u32>(g_nic.tx_count - g_nic.ntx_free); }

u8* tx_alloc() {
  Nic& n = g_nic;
  if (n.ntx_free == 0) {
    txq().kick();  // the caller may have been batching (kick=false)
    tx_reclaim();
  }
  const u64 start = rdtsc();
  while (n.ntx_free == 0) {
    if (rdtsc() - start > virtio::kWaitCycles) {
      fail("net: every transmit buffer is still with the device (no tx completions)");
    }
    cpu_relax();
    tx_reclaim();
  }
  const u16 slot = n.tx_free[--n.ntx_free];
  return n.tx_mem + static_cast<u64>(slot) * kTxSlotSize + sizeof(VnetHdr);
}

void tx_submit(u8* frame, u32 len, u16 csum_start, u16 csum_offset, bool kick) {
  Nic& n = g_nic;
  u8* base = frame - sizeof(VnetHdr);
  const u64 off = static_cast<u64>(base - n.tx_mem);
  const u16 slot = static_cast<u16>(off / kTxSlotSize);
  if (off % kTxSlotSize != 0 || slot >= n.tx_count || len > kTxSlotSize - sizeof(VnetHdr)) {
    fail("net: tx_submit of a buffer that tx_alloc did not return");
  }
  VnetHdr h{};
  if (csum_start != 0) {
    if (n.dev.features & kFCsum) {
      h.flags = kHdrNeedsCsum;
      h.csum_start = csum_start;
      h.csum_offset = csum_offset;
    } else {
      // The field holds the pseudo-header sum; finish it here.
      u16 c = static_cast<u16>(~csum_fold(csum_add(0, frame + csum_start, len - csum_start)));
      if (c == 0) c = 0xffff;  // UDP: 0 would mean "no checksum"
      put16(frame + csum_start + csum_offset, c);
    }
  }
  memcpy(base, &h, sizeof(h));
  Buf bufs[2];
  u32 nb;
  if (n.opt.tx_split) {
    bufs[0] = Buf{reinterpret_cast<u64>(base), sizeof(VnetHdr), false};
    bufs[1] = Buf{reinterpret_cast<u64>(frame), len, false};
    nb = 2;
  } else {
    bufs[0] = Buf{reinterpret_cast<u64>(base), static_cast<u32>(sizeof(VnetHdr) + len), false};
    nb = 1;
  }
  int head = txq().add(bufs, nb);
  const u64 start = rdtsc();
  while (head < 0) {  // descriptors run out before slots with split chains
    if (rdtsc() - start > virtio::kWaitCycles) fail("net: transmit queue stays full");
    txq().kick();
    cpu_relax();
    tx_reclaim();
    head = txq().add(bufs, nb);
  }
  n.tx_slot_of[head] = slot;
  ++n.counters.tx_frames;
  n.counters.tx_bytes += len;
  if (kick) txq().kick();
}

void tx_kick() { txq().kick(); }

u32 poll() {
  Nic& n = g_nic;
  if (n.in_poll) return 0;
  n.in_poll = true;
  tx_reclaim();
  u32 frames = 0;
  u16 slot;
  u32 len;
  const bool mrg = n.dev.features & kFMrgRxbuf;
  while (rx_take(&slot, &len)) {
    ++frames;
    if (len < sizeof(VnetHdr)) {
      ++n.counters.rx_dropped;
      rx_post(slot);
      continue;
    }
    const u8* buf = rx_buf(slot);
    VnetHdr h;
    memcpy(&h, buf, sizeof(h));
    const u32 nbuf = mrg ? h.num_buffers : 1;
    if (nbuf <= 1) {
      if (mrg && nbuf == 0) {
        ++n.counters.rx_dropped;
      } else {
        deliver(h, buf + sizeof(VnetHdr), len - static_cast<u32>(sizeof(VnetHdr)));
      }
      rx_post(slot);
      continue;
    }
    // A frame spread over nbuf buffers (MRG_RXBUF): the device publishes
    // them together, so the rest is there already (bounded wait anyway).
    u32 total = len - static_cast<u32>(sizeof(VnetHdr));
    memcpy(n.assembly, buf + sizeof(VnetHdr), total);
    rx_post(slot);
    bool overflow = false;
    for (u32 k = 1; k < nbuf; ++k) {
      const u64 start = rdtsc();
      while (!rx_take(&slot, &len)) {
        if (rdtsc() - start > kSecond) fail("net: num_buffers promised more buffers than came");
        cpu_relax();
      }
      if (total + len > kAssemblySize) overflow = true;
      else memcpy(n.assembly + total, rx_buf(slot), len);
      total += len;
      rx_post(slot);
    }
    ++n.counters.rx_multi_buffer;
    if (overflow) ++n.counters.rx_dropped;
    else deliver(h, n.assembly, total);
  }
  if (frames) rxq().kick();
  n.in_poll = false;
  return frames;
}

bool ctrl_command(u8 cls, u8 cmd, const void* data, u32 len) {
  Nic& n = g_nic;
  if (!n.ctrl) fail("net: control queue not negotiated");
  if (len > sizeof(n.ctrl_cmd.data)) fail("net: control command data too long");
  CtrlCmd& c = n.ctrl_cmd;
  c.cls = cls;
  c.cmd = cmd;
  memcpy(c.data, data, len);
  c.ack = 0xee;
  Buf bufs[3];
  u32 nb = 0;
  bufs[nb++] = Buf{reinterpret_cast<u64>(&c.cls), 2, false};
  if (len) bufs[nb++] = Buf{reinterpret_cast<u64>(c.data), len, false};
  bufs[nb++] = Buf{reinterpret_cast<u64>(&c.ack), 1, true};
  Queue& q = n.dev.queue[kCtrlQ];
  const int head = q.add(bufs, nb);
  if (head < 0) fail("net: control queue full");
  q.kick();
  u32 id, used;
  q.wait(&id, &used, "net: control command not completed");
  if (id != static_cast<u32>(head)) fail("net: control queue returned another chain");
  return c.ack == 0;
}

// ---- Addresses --------------------------------------------------------------

Config& config() { return g_nic.config; }

void set_static(u32 ip, u32 mask, u32 gateway) {
  Config& c = g_nic.config;
  c.ip = ip;
  c.mask = mask;
  c.gateway = gateway;
  c.dhcp_server = 0;
  c.lease_seconds = 0;
  c.configured = true;
}

bool parse_ip(const char* s, usize n, u32* out) {
  u32 ip = 0, part = 0, parts = 0, digits = 0;
  for (usize i = 0; i <= n; ++i) {
    if (i == n || s[i] == '.') {
      if (digits == 0 || part > 255) return false;
      ip = ip << 8 | part;
      ++parts;
      part = digits = 0;
      continue;
    }
    if (s[i] < '0' || s[i] > '9' || ++digits > 3) return false;
    part = part * 10 + static_cast<u32>(s[i] - '0');
  }
  if (parts != 4) return false;
  *out = ip;
  return true;
}

bool cmdline_ip(const char* key, u32* out) {
  const char* v;
  usize n;
  return cmdline_get(key, &v, &n) && parse_ip(v, n, out);
}

void print_ip(u32 ip) {
  for (int i = 3; i >= 0; --i) {
    print_dec((ip >> (8 * i)) & 0xff);
    if (i) putc('.');
  }
}

void print_mac(const Mac& m) {
  constexpr const char* kHex = "0123456789abcdef";
  for (int i = 0; i < 6; ++i) {
    putc(kHex[m.b[i] >> 4]);
    putc(kHex[m.b[i] & 0xf]);
    if (i < 5) putc(':');
  }
}

// ---- ARP ----------------------------------------------------------------------------

bool arp_resolve(u32 ip, Mac* out, u64 cycles) {
  if (arp_lookup(ip, out)) return true;
  if (g_nic.in_poll) return false;  // called from a handler: cannot wait here
  const u8 zero[6] = {};
  const u64 start = rdtsc();
  while (rdtsc() - start < cycles) {
    arp_send(1, kBroadcastMac, zero, ip);
    const u64 resend = rdtsc() + kSecond / 4;
    while (rdtsc() < resend) {
      poll();
      if (arp_lookup(ip, out)) return true;
      cpu_relax();
    }
  }
  return false;
}

void arp_flush() {
  for (ArpEntry& e : g_nic.arp) e.valid = false;
}

// ---- DHCP -------------------------------------------------------------------------

bool dhcp_discover_offer(u64 cycles) {
  g_dhcp.xid = random32();
  udp_bind(kDhcpClient, dhcp_handler);
  const bool ok = dhcp_exchange(kDhcpDiscover, kDhcpOffer, 0, rdtsc() + cycles) == kDhcpOffer;
  udp_unbind(kDhcpClient);
  return ok;
}

bool dhcp(u64 cycles) {
  const u64 deadline = rdtsc() + cycles;
  g_nic.config.configured = false;
  udp_bind(kDhcpClient, dhcp_handler);
  bool ok = false;
  while (!ok && rdtsc() < deadline) {
    g_dhcp.xid = random32();
    if (dhcp_exchange(kDhcpDiscover, kDhcpOffer, 0, deadline) != kDhcpOffer) break;
    if (g_dhcp.yiaddr == 0 || g_dhcp.server == 0) {
      print("net: dhcp: offer without an address or server id\n");
      continue;
    }
    const u8 got = dhcp_exchange(kDhcpRequest, kDhcpAck, kDhcpNak, deadline);
    if (got == kDhcpNak) {
      print("net: dhcp: NAK, starting over\n");
      continue;
    }
    ok = got == kDhcpAck;
  }
  udp_unbind(kDhcpClient);
  if (!ok) {
    print("net: dhcp: no offer/ack before the deadline\n");
    return false;
  }
  Config& c = g_nic.config;
  c.ip = g_dhcp.yiaddr;
  c.mask = g_dhcp.mask != 0 ? g_dhcp.mask : 0xffffff00u;
  c.gateway = g_dhcp.router;
  c.dhcp_server = g_dhcp.server;
  c.lease_seconds = g_dhcp.lease;
  c.configured = true;
  print("net: dhcp ip=");
  print_ip(c.ip);
  print(" gw=");
  print_ip(c.gateway);
  print(" mask=");
  print_ip(c.mask);
  print(" server=");
  print_ip(c.dhcp_server);
  print(" lease=");
  print_dec(c.lease_seconds);
  putc('\n');
  return true;
}

// ---- UDP --------------------------------------------------------------------------

void udp_bind(u16 port, UdpHandler h) {
  for (UdpBinding& b : g_nic.udp) {
    if (b.handler != nullptr && b.port == port) {
      b.handler = h;
      return;
    }
  }
  for (UdpBinding& b : g_nic.udp) {
    if (b.handler == nullptr) {
      b.port = port;
      b.handler = h;
      return;
    }
  }
  fail("net: too many bound UDP ports");
}

void udp_unbind(u16 port) {
  for (UdpBinding& b : g_nic.udp) {
    if (b.port == port) b.handler = nullptr;
  }
}

u32 udp_max_payload() {
  const u32 by_mtu = g_nic.mtu - kIpHdr - kUdpHdr;
  const u32 by_slot = kTxSlotSize - sizeof(VnetHdr) - kEthHdr - kIpHdr - kUdpHdr;
  return by_mtu < by_slot ? by_mtu : by_slot;
}

bool udp_send(u32 dst, u16 sport, u16 dport, const void* data, u32 len, bool kick) {
  if (len > udp_max_payload()) return false;
  Mac dmac;
  if (!next_hop_mac(dst, &dmac)) return false;
  u8* f = tx_alloc();
  u8* u = ip_header(eth_header(f, dmac.b, kEthIp), dst, kProtoUdp, kUdpHdr + len);
  put16(u + 0, sport);
  put16(u + 2, dport);
  put16(u + 4, static_cast<u16>(kUdpHdr + len));
  const u32 src = g_nic.config.configured ? g_nic.config.ip : 0;
  put16(u + 6, csum_fold(pseudo_sum(src, dst, kProtoUdp, kUdpHdr + len)));
  memcpy(u + kUdpHdr, data, len);
  tx_submit(f, kEthHdr + kIpHdr + kUdpHdr + len, kEthHdr + kIpHdr, 6, kick);
  return true;
}

// ---- TCP --------------------------------------------------------------------------

bool tcp_connect(u32 ip, u16 port, u64 cycles) {
  Tcp& t = g_nic.tcp;
  u8* ring = t.ring;
  const u16 next_port = t.next_port;
  memset(&t, 0, sizeof(t));
  t.ring = ring;
  t.next_port = next_port == 0 ? static_cast<u16>(49152 + (rdtsc() & 0x3fff)) : next_port;
  t.lport = t.next_port++;
  if (t.next_port < 49152) t.next_port = 49152;
  t.rip = ip;
  t.rport = port;
  Mac m;
  if (!next_hop_mac(ip, &m)) {
    print("net: tcp: no ARP answer from the next hop\n");
    return false;
  }
  t.rmac = m;
  t.iss = random32();
  t.snd_una = t.snd_nxt = t.iss;
  t.snd_max = t.iss + 1;
  t.rto = kRtoInitial;
  t.state = TcpState::kSynSent;
  tcp_segment(t.iss, kSyn, nullptr, 0);
  tcp_arm_timer();
  const u64 start = rdtsc();
  while (t.state == TcpState::kSynSent && !t.failed) {
    if (rdtsc() - start > cycles) {
      print("net: tcp: no SYN-ACK\n");
      t.state = TcpState::kClosed;
      return false;
    }
    poll();
    tcp_timer();
    cpu_relax();
  }
  if (t.failed) return false;
  tcp_output();  // the handshake's final ACK
  return true;
}

void tcp_write(const u8* data, u64 len) {
  Tcp& t = g_nic.tcp;
  if (t.data != nullptr || t.want_fin) fail("net: tcp_write called twice, or after tcp_fin");
  if (len > 0x7fffffff) fail("net: tcp_write of more than 2 GiB");
  t.data = data;
  t.data_len = len;
}

void tcp_fin() { g_nic.tcp.want_fin = true; }

u64 tcp_read(u8* dst, u64 max) {
  Tcp& t = g_nic.tcp;
  u64 n = 0;
  while (n < max && t.ring_len > 0) {
    dst[n++] = t.ring[t.ring_head];
    t.ring_head = (t.ring_head + 1) % kTcpRing;
    --t.ring_len;
  }
  // Tell the peer about room it could not see (the window we last
  // advertised was too small for a full segment).
  if (n > 0 && t.adv_wnd < t.mss && tcp_window() >= t.mss) t.ack_now = true;
  return n;
}

bool tcp_service() {
  Tcp& t = g_nic.tcp;
  poll();
  if (t.state == TcpState::kEstablished) {
    tcp_timer();
    if (!t.failed) tcp_output();
  }
  return !t.failed;
}

bool tcp_all_acked() {
  const Tcp& t = g_nic.tcp;
  const bool data = static_cast<u64>(t.snd_una - (t.iss + 1)) >= t.data_len;
  return t.state == TcpState::kEstablished && data && (!t.want_fin || t.fin_acked);
}

bool tcp_peer_closed() { return g_nic.tcp.peer_fin && g_nic.tcp.ring_len == 0; }

u64 tcp_retransmits() { return g_nic.tcp.retransmits; }

}  // namespace guest::net
