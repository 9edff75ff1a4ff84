// flint test guest: a polled virtio-net driver and a tiny IPv4 stack
// (Ethernet, ARP, IPv4, UDP, a DHCP client and one TCP client connection).
//
// Everything polls: nothing happens unless a program calls poll() (or a
// function that waits, which polls). Every wait is bounded and either
// returns false or fail()s with a message. One NIC, one queue pair (queue 0
// receives, queue 1 transmits, queue 2 is the control queue when
// CTRL_VQ is negotiated; MQ is never negotiated).
//
// Addresses and ports are in host byte order in this API (192.0.2.1 is
// 0xc0000201); the stack converts when it writes headers.
#pragma once

#include "tests/guest/guest.h"
#include "tests/guest/virtio.h"

namespace guest::net {

// virtio-net feature bits (virtio 1.2 §5.1.3).
inline constexpr u64 kFCsum = 1ull << 0;
inline constexpr u64 kFGuestCsum = 1ull << 1;
inline constexpr u64 kFMtu = 1ull << 3;
inline constexpr u64 kFMac = 1ull << 5;
inline constexpr u64 kFMrgRxbuf = 1ull << 15;
inline constexpr u64 kFStatus = 1ull << 16;
inline constexpr u64 kFCtrlVq = 1ull << 17;
inline constexpr u64 kFCtrlRx = 1ull << 18;
inline constexpr u64 kFMq = 1ull << 22;
inline constexpr u64 kFCtrlMacAddr = 1ull << 23;

// virtio_net_hdr_v1 (VERSION_1: always 12 bytes, num_buffers included).
struct VnetHdr {
  u8 flags;
  u8 gso_type;
  u16 hdr_len;
  u16 gso_size;
  u16 csum_start;
  u16 csum_offset;
  u16 num_buffers;
};
static_assert(sizeof(VnetHdr) == 12);
inline constexpr u8 kHdrNeedsCsum = 1;
inline constexpr u8 kHdrDataValid = 2;

inline constexpr u32 kEthHdr = 14;
inline constexpr u32 kIpHdr = 20;
inline constexpr u32 kUdpHdr = 8;
inline constexpr u32 kTcpHdr = 20;
inline constexpr u32 kTxSlotSize = 2048;  // one transmit buffer: header + frame

// About one second on any plausible TSC (1-5 GHz): only a bound for waits.
inline constexpr u64 kSecond = 3000000000ull;

struct Mac {
  u8 b[6];
};

// What the driver asks for; defaults come from the command line
// (options_from_cmdline): flint.mrg=0 turns MRG_RXBUF off, flint.rxbuf=N
// sets the receive buffer size (256..4096; with MRG_RXBUF a frame then
// spans several buffers), flint.txcsum=1 lets the device fill in UDP/TCP
// checksums when it offers CSUM, flint.guestcsum=0 refuses GUEST_CSUM,
// flint.ctrl=0 refuses CTRL_VQ, flint.event_idx=0 refuses EVENT_IDX,
// flint.txsplit=1 sends the header and the frame in two descriptors.
struct Options {
  bool mrg_rxbuf;
  u32 rx_buf_size;
  bool tx_csum;
  bool guest_csum;
  bool ctrl;
  bool event_idx;
  bool tx_split;
};
Options options_from_cmdline();

// ---- Driver -------------------------------------------------------------------

// Finds the virtio-net function, resets and initialises it, posts receive
// buffers; prints `net: pci ...` and `net: mac=.. mtu=.. link=.. features=..`.
// fail()s when there is no device.
void open(const Options& o);
// Resets the device and sets it up again with the same options (after
// NEEDS_RESET): rings and buffers start afresh.
void reopen();
virtio::Device& device();
const Options& options();
const Mac& mac();
u16 mtu();       // the device's MTU when it offers one, else 1500
bool link_up();  // always true without the STATUS feature
// Waits (bounded) for the link; true when it is up.
bool wait_link_up(u64 cycles);

// Transmit: tx_alloc() returns a frame buffer (after room for the header) of
// kTxSlotSize - 12 bytes, reclaiming completed buffers and waiting (bounded,
// fail()s) when all are in flight. tx_submit() queues it; with `csum_start`
// non-zero and the device's CSUM negotiated, the device fills in the
// checksum at csum_start + csum_offset (NEEDS_CSUM). kick=false batches.
u8* tx_alloc();
void tx_submit(u8* frame, u32 len, u16 csum_start = 0, u16 csum_offset = 0, bool kick = true);
void tx_kick();
// Completed transmit buffers back to the free list; returns how many.
u32 tx_reclaim();
u32 tx_in_flight();
// Queues a chain the caller built (the hostile program: any flags, any
// lengths) and kicks; it owns no transmit slot. Returns the head, -1 when
// the queue is full. Counters::tx_raw_completed counts its completions.
int tx_raw(const virtio::Buf* bufs, u32 n);

// `bytes` of zeroed-or-not RAM for a program's buffers (the driver's arena,
// from 32 MiB; fail()s when the memory map has none there).
u8* alloc(u64 bytes);

// Processes every frame the device has returned (ARP, IPv4 → UDP handlers,
// TCP), reposts the buffers and reclaims transmit buffers. Returns the
// number of frames seen.
u32 poll();

struct Counters {
  // rx_other_mac: frames for another unicast or multicast address, which a
  // device filtering as asked would not have delivered (also in rx_dropped).
  u64 rx_frames, rx_bytes, rx_dropped, rx_other_mac, rx_multi_buffer, rx_csum_partial,
      rx_csum_valid;
  u64 tx_frames, tx_bytes, tx_raw_completed;
  u64 udp_rx, udp_bad_csum, tcp_rx, tcp_bad_csum, arp_replies_sent;
};
const Counters& counters();

// The control queue (when negotiated): class, command, data; true on
// VIRTIO_NET_OK. fail()s when the device never answers.
bool ctrl_command(u8 cls, u8 cmd, const void* data, u32 len);
inline constexpr u8 kCtrlRx = 0;
inline constexpr u8 kCtrlRxPromisc = 0;
inline constexpr u8 kCtrlMac = 1;
inline constexpr u8 kCtrlMacAddrSet = 1;

// ---- Addresses --------------------------------------------------------------

struct Config {
  u32 ip, mask, gateway, dhcp_server, lease_seconds;
  bool configured;
};
Config& config();
void set_static(u32 ip, u32 mask, u32 gateway);
// "a.b.c.d" → host order; false when malformed.
bool parse_ip(const char* s, usize n, u32* out);
bool cmdline_ip(const char* key, u32* out);
void print_ip(u32 ip);
void print_mac(const Mac& m);

// ---- ARP ------------------------------------------------------------------------

// The MAC for `ip` (on-link), from the cache or by asking (retries every
// 0.25 s, up to `cycles`). False on timeout.
bool arp_resolve(u32 ip, Mac* out, u64 cycles = 5 * kSecond);
void arp_flush();

// ---- DHCP -----------------------------------------------------------------------

// DISCOVER/OFFER/REQUEST/ACK; on success sets config() (ip, mask, router,
// lease) and prints `net: dhcp ip=A.B.C.D gw=.. mask=.. lease=..`. False
// (after printing why) when no ACK came within `cycles`.
bool dhcp(u64 cycles = 10 * kSecond);
// Broadcasts one DISCOVER and waits for an OFFER; true when one came (the
// hostile program's check that the device works).
bool dhcp_discover_offer(u64 cycles);

// ---- UDP --------------------------------------------------------------------------

using UdpHandler = void (*)(u32 src_ip, u16 src_port, u16 dst_port, const u8* data, u32 len);
// At most 8 bound ports; a datagram to another port is dropped.
void udp_bind(u16 port, UdpHandler h);
void udp_unbind(u16 port);
// Builds and queues one datagram (resolving the next hop's MAC first, which
// may poll). False when the next hop does not answer ARP or the payload does
// not fit one frame. Must not be called from a UdpHandler.
bool udp_send(u32 dst_ip, u16 src_port, u16 dst_port, const void* data, u32 len, bool kick = true);
// The largest UDP payload one frame carries (MTU - IP - UDP, at most the
// transmit slot).
u32 udp_max_payload();

// ---- TCP (one client connection) ------------------------------------------------

// Connects from an ephemeral port; false (with a printed reason) on RST or
// timeout.
bool tcp_connect(u32 ip, u16 port, u64 cycles = 5 * kSecond);
// Queues `len` bytes to send (the memory must stay valid until they are
// acknowledged). Only once per connection.
void tcp_write(const u8* data, u64 len);
// Queues a FIN after the data.
void tcp_fin();
// Copies up to `max` received in-order bytes; returns how many.
u64 tcp_read(u8* dst, u64 max);
// Polls the device and runs the connection (sending, retransmitting,
// acknowledging). Returns false when the connection failed (reset, too many
// retransmissions).
bool tcp_service();
bool tcp_all_acked();    // every byte queued (and the FIN, if asked) acknowledged
bool tcp_peer_closed();  // the peer's FIN arrived and every byte before it was read
u64 tcp_retransmits();

}  // namespace guest::net
