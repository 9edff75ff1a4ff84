// The block engines against real files: io_uring (where the host allows it)
// and the thread pool run the same cases. Files live under the build
// directory, not /tmp, because tmpfs may refuse O_DIRECT.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "block/disk_file.h"
#include "block/engine.h"
#include "block/request.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::block {
namespace {

constexpr uint64_t kKiB = 1024;

// A temporary file that removes itself.
class TempFile {
 public:
  explicit TempFile(const std::string& dir = FLINT_BUILD_ROOT, uint64_t size = 1 << 20) {
    std::string tmpl = dir + "/blk-test-XXXXXX";
    int fd = mkstemp(tmpl.data());
    EXPECT_GE(fd, 0) << strerror(errno);
    path_ = tmpl;
    if (fd >= 0) {
      EXPECT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
      close(fd);
    }
  }
  ~TempFile() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
  return v;
}

std::vector<uint8_t> ReadFile(int fd, uint64_t offset, size_t n) {
  std::vector<uint8_t> v(n);
  EXPECT_EQ(pread(fd, v.data(), n, static_cast<off_t>(offset)), static_cast<ssize_t>(n));
  return v;
}

// Submits what is queued and reaps until `count` ops completed; returns
// tag -> result.
std::map<uint64_t, int64_t> RunBatch(Engine& e, size_t count) {
  std::map<uint64_t, int64_t> results;
  EXPECT_TRUE(e.Submit().ok());
  while (results.size() < count) {
    pollfd p{e.completion_fd(), POLLIN, 0};
    int r = poll(&p, 1, 30000);  // only a hang guard
    if (r <= 0) {
      ADD_FAILURE() << "no completion within 30 s";
      break;
    }
    e.Reap([&](uint64_t tag, int64_t result) {
      EXPECT_EQ(results.count(tag), 0u) << "tag " << tag << " completed twice";
      results[tag] = result;
    });
  }
  return results;
}

int64_t RunOne(Engine& e, const Op& op) {
  EXPECT_TRUE(e.Queue(op).ok());
  auto r = RunBatch(e, 1);
  return r.count(op.tag) ? r[op.tag] : INT64_MIN;
}

class BlockEngineTest : public ::testing::TestWithParam<IoEngine> {
 protected:
  void SetUp() override {
    disk_ = std::make_unique<TempFile>();
    auto f = DiskFile::Open(disk_->path(), /*readonly=*/false, /*direct=*/false);
    ASSERT_TRUE(f.ok()) << f.status();
    file_ = std::make_unique<DiskFile>(std::move(*f));
    engine_ = Make(file_->fd());
  }

  std::unique_ptr<Engine> Make(int fd) {
    auto made = MakeEngine(GetParam(), EngineOptions{.fd = fd, .queue_depth = 64});
    if (!made.ok()) {
      if (GetParam() == IoEngine::kIoUring) {
        skip_reason_ = std::string(made.status().message());
      } else {
        ADD_FAILURE() << made.status();
      }
      return nullptr;
    }
    EXPECT_EQ(made->kind, GetParam());
    EXPECT_STREQ(made->engine->name(), EngineName(GetParam()));
    return std::move(made->engine);
  }

  std::unique_ptr<TempFile> disk_;
  std::unique_ptr<DiskFile> file_;
  std::unique_ptr<Engine> engine_;
  std::string skip_reason_;
};

#define REQUIRE_ENGINE()                                                       \
  do {                                                                         \
    if (engine_ == nullptr) {                                                  \
      if (!skip_reason_.empty()) GTEST_SKIP() << "io_uring: " << skip_reason_; \
      FAIL() << "no engine";                                                   \
    }                                                                          \
  } while (0)

TEST_P(BlockEngineTest, WritesAndReadsBackThroughManyIovecs) {
  REQUIRE_ENGINE();
  for (uint64_t offset : {uint64_t{0}, 3 * 4 * kKiB, 1001 * uint64_t{512}}) {
    std::vector<uint8_t> data = Pattern(6 * kKiB, static_cast<uint8_t>(offset));
    // Uneven pieces, not page aligned (no O_DIRECT here).
    std::vector<iovec> out = {
        {data.data(), 512}, {data.data() + 512, 1536}, {data.data() + 2048, 4096}};
    EXPECT_EQ(RunOne(*engine_, Op{.type = OpType::kWrite, .tag = 1, .offset = offset, .iov = out}),
              6 * 1024);
    EXPECT_EQ(ReadFile(file_->fd(), offset, data.size()), data);
    std::vector<uint8_t> back(data.size());
    std::vector<iovec> in = {
        {back.data(), 4096}, {back.data() + 4096, 1024}, {back.data() + 5120, 1024}};
    EXPECT_EQ(RunOne(*engine_, Op{.type = OpType::kRead, .tag = 2, .offset = offset, .iov = in}),
              6 * 1024);
    EXPECT_EQ(back, data);
  }
}

TEST_P(BlockEngineTest, BatchOf32CompletesEachOpOnce) {
  REQUIRE_ENGINE();
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<iovec> iovs(32);
  for (int i = 0; i < 32; ++i) bufs.push_back(Pattern(4096, static_cast<uint8_t>(i * 3)));
  for (int i = 0; i < 32; ++i) {
    iovs[i] = {bufs[i].data(), 4096};
    ASSERT_TRUE(engine_
                    ->Queue(Op{.type = OpType::kWrite,
                               .tag = 100u + i,
                               .offset = uint64_t(31 - i) * 8192,
                               .iov = std::span<const iovec>(&iovs[i], 1)})
                    .ok());
  }
  EXPECT_EQ(engine_->in_flight(), 32u);
  auto results = RunBatch(*engine_, 32);
  ASSERT_EQ(results.size(), 32u);
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(results[100u + i], 4096) << i;
    EXPECT_EQ(ReadFile(file_->fd(), uint64_t(31 - i) * 8192, 4096), bufs[i]) << i;
  }
  EXPECT_EQ(engine_->in_flight(), 0u);
}

TEST_P(BlockEngineTest, QueueBeyondDepthFails) {
  REQUIRE_ENGINE();
  uint8_t b[512];
  iovec v{b, sizeof(b)};
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(engine_->Queue(Op{.type = OpType::kRead, .tag = uint64_t(i), .iov = {&v, 1}}).ok());
  }
  EXPECT_EQ(engine_->Queue(Op{.type = OpType::kRead, .tag = 64, .iov = {&v, 1}}).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RunBatch(*engine_, 64).size(), 64u);
}

TEST_P(BlockEngineTest, MoreIovecsThanIovMaxAreContinued) {
  REQUIRE_ENGINE();
  // 1500 buffers: one preadv takes at most IOV_MAX (1024), the engine goes on.
  std::vector<uint8_t> data = Pattern(1500 * 512, 9);
  std::vector<iovec> iov;
  for (size_t i = 0; i < 1500; ++i) iov.push_back({data.data() + i * 512, 512});
  EXPECT_EQ(RunOne(*engine_, Op{.type = OpType::kWrite, .tag = 7, .offset = 0, .iov = iov}),
            1500 * 512);
  EXPECT_EQ(ReadFile(file_->fd(), 0, data.size()), data);
}

TEST_P(BlockEngineTest, FlushSucceeds) {
  REQUIRE_ENGINE();
  EXPECT_EQ(RunOne(*engine_, Op{.type = OpType::kFlush, .tag = 3}), 0);
}

TEST_P(BlockEngineTest, ReadPastEndOfFileReturnsWhatIsThere) {
  REQUIRE_ENGINE();
  const uint64_t size = 1 << 20;
  std::vector<uint8_t> buf(16 * kKiB, 0xee);
  iovec v{buf.data(), buf.size()};
  EXPECT_EQ(RunOne(*engine_,
                   Op{.type = OpType::kRead, .tag = 1, .offset = size - 4 * kKiB, .iov = {&v, 1}}),
            4096);
  EXPECT_EQ(RunOne(*engine_, Op{.type = OpType::kRead, .tag = 2, .offset = size, .iov = {&v, 1}}),
            0);
}

TEST_P(BlockEngineTest, WriteZeroesReadsBackZeroesWithAndWithoutUnmap) {
  REQUIRE_ENGINE();
  std::vector<uint8_t> data = Pattern(256 * kKiB, 1);
  ASSERT_EQ(pwrite(file_->fd(), data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  for (bool unmap : {false, true}) {
    const uint64_t offset = unmap ? 128 * kKiB : 16 * kKiB;
    EXPECT_EQ(RunOne(*engine_, Op{.type = OpType::kWriteZeroes,
                                  .tag = 5,
                                  .offset = offset,
                                  .length = 64 * kKiB,
                                  .unmap = unmap}),
              0);
    EXPECT_EQ(ReadFile(file_->fd(), offset, 64 * kKiB), std::vector<uint8_t>(64 * kKiB, 0));
    // Neighbours untouched.
    EXPECT_EQ(ReadFile(file_->fd(), offset - 512, 512),
              std::vector<uint8_t>(data.begin() + offset - 512, data.begin() + offset));
    EXPECT_EQ(ReadFile(file_->fd(), offset + 64 * kKiB, 512),
              std::vector<uint8_t>(data.begin() + offset + 64 * kKiB,
                                   data.begin() + offset + 64 * kKiB + 512));
  }
  struct stat st;
  ASSERT_EQ(fstat(file_->fd(), &st), 0);
  EXPECT_EQ(st.st_size, 1 << 20);  // KEEP_SIZE
}

// tmpfs punches holes but has no FALLOC_FL_ZERO_RANGE: write-zeroes without
// unmap must fall back to writing zeroes.
TEST_P(BlockEngineTest, WriteZeroesFallsBackWhereZeroRangeIsUnsupported) {
  if (access("/dev/shm", W_OK) != 0) GTEST_SKIP() << "no writable /dev/shm";
  TempFile shm("/dev/shm", 1 << 20);
  UniqueFd fd(open(shm.path().c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  if (fallocate(fd.get(), FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0) {
    GTEST_SKIP() << "this kernel's tmpfs supports ZERO_RANGE: the fallback is not reached";
  }
  auto engine = Make(fd.get());
  if (engine == nullptr) GTEST_SKIP() << "io_uring: " << skip_reason_;
  std::vector<uint8_t> data = Pattern(1 << 20, 4);
  ASSERT_EQ(pwrite(fd.get(), data.data(), data.size(), 0), 1 << 20);
  // 600 KiB: more than one 256 KiB chunk of the zero buffer.
  for (int round = 0; round < 2; ++round) {  // the second one skips ZERO_RANGE at once
    const uint64_t offset = round == 0 ? 4096 : 700 * kKiB;
    const uint64_t len = round == 0 ? 600 * kKiB : 8192;
    EXPECT_EQ(RunOne(*engine,
                     Op{.type = OpType::kWriteZeroes, .tag = 1, .offset = offset, .length = len}),
              0);
    EXPECT_EQ(ReadFile(fd.get(), offset, len), std::vector<uint8_t>(len, 0));
    EXPECT_EQ(ReadFile(fd.get(), offset + len, 512),
              std::vector<uint8_t>(data.begin() + offset + len, data.begin() + offset + len + 512));
  }
}

TEST_P(BlockEngineTest, DiscardPunchesAHoleWhereTheFilesystemCan) {
  REQUIRE_ENGINE();
  std::vector<uint8_t> data = Pattern(1 << 20, 2);
  ASSERT_EQ(pwrite(file_->fd(), data.data(), data.size(), 0), 1 << 20);
  ASSERT_EQ(fdatasync(file_->fd()), 0);
  struct stat before;
  ASSERT_EQ(fstat(file_->fd(), &before), 0);
  // Whether this filesystem punches holes at all, asked on a scratch file.
  TempFile probe;
  UniqueFd pfd(open(probe.path().c_str(), O_RDWR | O_CLOEXEC));
  const bool punches =
      fallocate(pfd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0;

  EXPECT_EQ(
      RunOne(*engine_,
             Op{.type = OpType::kDiscard, .tag = 9, .offset = 256 * kKiB, .length = 512 * kKiB}),
      0);
  if (!punches) GTEST_SKIP() << "filesystem cannot punch holes: discard is a no-op here";
  EXPECT_EQ(ReadFile(file_->fd(), 256 * kKiB, 512 * kKiB), std::vector<uint8_t>(512 * kKiB, 0));
  struct stat after;
  ASSERT_EQ(fstat(file_->fd(), &after), 0);
  EXPECT_LT(after.st_blocks, before.st_blocks);
  EXPECT_EQ(after.st_size, before.st_size);
}

TEST_P(BlockEngineTest, DrainWaitsForEverythingAndLeavesTheEngineUsable) {
  REQUIRE_ENGINE();
  std::vector<uint8_t> data = Pattern(64 * kKiB, 5);
  iovec v{data.data(), data.size()};
  for (int i = 0; i < 16; ++i) {
    ASSERT_TRUE(engine_
                    ->Queue(Op{.type = OpType::kWrite,
                               .tag = uint64_t(i),
                               .offset = uint64_t(i) * 64 * kKiB,
                               .iov = {&v, 1}})
                    .ok());
  }
  engine_->Drain();  // submits the batch itself
  EXPECT_EQ(engine_->in_flight(), 0u);
  for (int i = 0; i < 16; ++i)
    EXPECT_EQ(ReadFile(file_->fd(), uint64_t(i) * 64 * kKiB, 64 * kKiB), data);
  // Results were dropped: nothing to reap.
  int reaped = 0;
  engine_->Reap([&](uint64_t, int64_t) { ++reaped; });
  EXPECT_EQ(reaped, 0);
  EXPECT_EQ(RunOne(*engine_, Op{.type = OpType::kFlush, .tag = 1}), 0);
}

TEST_P(BlockEngineTest, DirectIoNeedsAlignedBuffers) {
  engine_.reset();
  file_.reset();  // lets go of the image's write lock
  auto f = DiskFile::Open(disk_->path(), false, /*direct=*/true);
  if (!f.ok() && f.status().code() == absl::StatusCode::kInvalidArgument) {
    GTEST_SKIP() << f.status().message();
  }
  ASSERT_TRUE(f.ok()) << f.status();
  auto engine = Make(f->fd());
  UniqueFd check(open(disk_->path().c_str(), O_RDONLY | O_CLOEXEC));  // page-cache view
  if (engine == nullptr) GTEST_SKIP() << "io_uring: " << skip_reason_;
  const size_t align = std::max<size_t>(f->memory_alignment(), 4096);
  uint8_t* raw = static_cast<uint8_t*>(std::aligned_alloc(align, 64 * kKiB));
  ASSERT_NE(raw, nullptr);
  std::unique_ptr<uint8_t, decltype(&std::free)> buf(raw, &std::free);
  std::vector<uint8_t> data = Pattern(8192, 6);
  std::memcpy(raw, data.data(), data.size());
  iovec aligned{raw, 8192};
  EXPECT_EQ(
      RunOne(*engine, Op{.type = OpType::kWrite, .tag = 1, .offset = 8192, .iov = {&aligned, 1}}),
      8192);
  EXPECT_EQ(ReadFile(check.get(), 8192, 8192), data);
  std::memset(raw, 0, 8192);
  EXPECT_EQ(
      RunOne(*engine, Op{.type = OpType::kRead, .tag = 2, .offset = 8192, .iov = {&aligned, 1}}),
      8192);
  EXPECT_EQ(std::vector<uint8_t>(raw, raw + 8192), data);
  // One byte off: the kernel refuses, and the engine says so (virtio-blk
  // bounces such buffers before they get here). Read where data is: a hole
  // would be zero-filled without the alignment check.
  iovec unaligned{raw + 1, 4096};
  EXPECT_EQ(
      RunOne(*engine, Op{.type = OpType::kRead, .tag = 3, .offset = 8192, .iov = {&unaligned, 1}}),
      -EINVAL);
}

INSTANTIATE_TEST_SUITE_P(Engines, BlockEngineTest,
                         ::testing::Values(IoEngine::kIoUring, IoEngine::kThreads),
                         [](const ::testing::TestParamInfo<IoEngine>& p) {
                           return p.param == IoEngine::kIoUring ? std::string("IoUring")
                                                                : std::string("Threads");
                         });

// --- The op logic both engines share, step by step -------------------------

TEST(BlockRequest, ShortTransfersContinueWhereTheyStopped) {
  uint8_t a[1000], b[3000];
  iovec iov[] = {{a, sizeof(a)}, {b, sizeof(b)}};
  internal::FileCaps caps;
  internal::Request r;
  r.Start(Op{.type = OpType::kRead, .tag = 42, .offset = 4096, .iov = iov});
  internal::Step s = r.Next(caps);
  EXPECT_EQ(s.kind, internal::Step::kReadv);
  EXPECT_EQ(s.iovcnt, 2);
  EXPECT_EQ(s.offset, 4096u);
  EXPECT_FALSE(r.Finish(1500, caps));  // into the second buffer
  s = r.Next(caps);
  ASSERT_EQ(s.iovcnt, 1);
  EXPECT_EQ(s.iov[0].iov_base, b + 500);
  EXPECT_EQ(s.iov[0].iov_len, 2500u);
  EXPECT_EQ(s.offset, 4096u + 1500);
  EXPECT_FALSE(r.Finish(-EAGAIN, caps));  // retried as it was
  EXPECT_EQ(r.Next(caps).offset, 4096u + 1500);
  EXPECT_FALSE(r.Finish(-EINTR, caps));
  EXPECT_TRUE(r.Finish(0, caps));  // end of file
  EXPECT_EQ(r.result(), 1500);
  EXPECT_EQ(r.tag(), 42u);

  r.Start(Op{.type = OpType::kWrite, .tag = 1, .offset = 0, .iov = iov});
  EXPECT_FALSE(r.Finish(999, caps));
  EXPECT_TRUE(r.Finish(0, caps));  // no progress on a write is an error
  EXPECT_EQ(r.result(), -EIO);
  r.Start(Op{.type = OpType::kWrite, .tag = 1, .offset = 0, .iov = iov});
  EXPECT_TRUE(r.Finish(-ENOSPC, caps));
  EXPECT_EQ(r.result(), -ENOSPC);
}

TEST(BlockRequest, WriteZeroesFallsBackAndRemembers) {
  internal::FileCaps caps;
  internal::Request r;
  r.Start(Op{
      .type = OpType::kWriteZeroes, .tag = 1, .offset = 512, .length = 300 * kKiB, .unmap = true});
  internal::Step s = r.Next(caps);
  ASSERT_EQ(s.kind, internal::Step::kFallocate);
  EXPECT_EQ(s.mode, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
  EXPECT_EQ(s.length, 300 * kKiB);
  EXPECT_FALSE(r.Finish(-EOPNOTSUPP, caps));
  EXPECT_TRUE(caps.no_punch_hole.load());
  s = r.Next(caps);
  ASSERT_EQ(s.kind, internal::Step::kFallocate);
  EXPECT_EQ(s.mode, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE);
  EXPECT_FALSE(r.Finish(-EOPNOTSUPP, caps));
  EXPECT_TRUE(caps.no_zero_range.load());
  s = r.Next(caps);
  ASSERT_EQ(s.kind, internal::Step::kWritev);
  ASSERT_EQ(s.iovcnt, 1);
  EXPECT_EQ(s.iov[0].iov_len, 256 * kKiB);  // one chunk of the zero buffer
  EXPECT_EQ(s.offset, 512u);
  const auto* zeros = static_cast<const uint8_t*>(s.iov[0].iov_base);
  EXPECT_EQ(std::vector<uint8_t>(zeros, zeros + 256 * kKiB), std::vector<uint8_t>(256 * kKiB, 0));
  EXPECT_FALSE(r.Finish(256 * kKiB, caps));
  s = r.Next(caps);
  EXPECT_EQ(s.iov[0].iov_len, 44 * kKiB);
  EXPECT_EQ(s.offset, 512 + 256 * kKiB);
  EXPECT_TRUE(r.Finish(44 * kKiB, caps));
  EXPECT_EQ(r.result(), 0);
  // The next op goes straight to writing.
  r.Start(Op{.type = OpType::kWriteZeroes, .tag = 2, .offset = 0, .length = 4096});
  EXPECT_EQ(r.Next(caps).kind, internal::Step::kWritev);
}

TEST(BlockRequest, DiscardIsAHintWhereUnsupported) {
  internal::FileCaps caps;
  internal::Request r;
  r.Start(Op{.type = OpType::kDiscard, .tag = 1, .offset = 0, .length = 4096});
  EXPECT_TRUE(r.Finish(-EOPNOTSUPP, caps));
  EXPECT_EQ(r.result(), 0);
  r.Start(Op{.type = OpType::kDiscard, .tag = 1, .offset = 0, .length = 4096});
  EXPECT_TRUE(r.Finish(-EIO, caps));
  EXPECT_EQ(r.result(), -EIO);
}

// --- Factory -----------------------------------------------------------------

TEST(BlockEngineFactory, ThreadsAndAutoAndExplicitIoUring) {
  TempFile f;
  UniqueFd fd(open(f.path().c_str(), O_RDWR | O_CLOEXEC));
  auto pool = MakeEngine(IoEngine::kThreads, EngineOptions{.fd = fd.get()});
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->kind, IoEngine::kThreads);
  EXPECT_STREQ(pool->engine->name(), "threads");
  EXPECT_TRUE(pool->fallback_reason.empty());

  auto uring = MakeEngine(IoEngine::kIoUring, EngineOptions{.fd = fd.get()});
  auto automatic = MakeEngine(IoEngine::kAuto, EngineOptions{.fd = fd.get()});
  ASSERT_TRUE(automatic.ok()) << automatic.status();  // kAuto always gets an engine
  if (uring.ok()) {
    EXPECT_EQ(automatic->kind, IoEngine::kIoUring);
    EXPECT_TRUE(automatic->fallback_reason.empty());
  } else {
    EXPECT_NE(uring.status().message().find("io_uring is unavailable"), std::string::npos)
        << uring.status();
    EXPECT_EQ(automatic->kind, IoEngine::kThreads);
    EXPECT_FALSE(automatic->fallback_reason.empty());
  }
  EXPECT_FALSE(MakeEngine(IoEngine::kThreads, EngineOptions{.fd = -1}).ok());
}

// --- DiskFile ------------------------------------------------------------------

TEST(DiskFile, OpensAFileWithItsSize) {
  TempFile f(FLINT_BUILD_ROOT, 3 << 20);
  auto d = DiskFile::Open(f.path(), false, false);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size(), 3u << 20);
  EXPECT_EQ(d->logical_block_size(), 512u);
  EXPECT_FALSE(d->is_block_device());
  EXPECT_FALSE(d->readonly());
  EXPECT_TRUE(fcntl(d->fd(), F_GETFD) & FD_CLOEXEC);
  EXPECT_EQ(fcntl(d->fd(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_EQ(fcntl(d->fd(), F_GETFL) & O_ACCMODE, O_RDWR);
  auto ro = DiskFile::Open(f.path() + "", true, false);
  EXPECT_FALSE(ro.ok());  // the writer holds an exclusive lock
}

// The caller prefixes the path ("--disk path=P: "), so the messages never
// repeat it.
TEST(DiskFile, ErrorsSayTheProblemWithoutRepeatingThePath) {
  const std::string missing = std::string(FLINT_BUILD_ROOT) + "/no-such-disk.img";
  auto d = DiskFile::Open(missing, false, false);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(d.status().message(), "the image does not exist");

  TempFile odd(FLINT_BUILD_ROOT, 1000);
  d = DiskFile::Open(odd.path(), false, false);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("1000 bytes"), std::string::npos) << d.status();
  EXPECT_NE(d.status().message().find("multiple of 512"), std::string::npos) << d.status();
  EXPECT_EQ(d.status().message().find(odd.path()), std::string::npos) << d.status();

  TempFile empty(FLINT_BUILD_ROOT, 0);
  EXPECT_EQ(DiskFile::Open(empty.path(), true, false).status().code(),
            absl::StatusCode::kInvalidArgument);

  for (bool ro : {false, true}) {
    d = DiskFile::Open(FLINT_BUILD_ROOT, ro, false);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(d.status().message().find("is a directory"), std::string::npos) << d.status();
    EXPECT_EQ(d.status().message().find(FLINT_BUILD_ROOT), std::string::npos) << d.status();
  }

  d = DiskFile::Open("/dev/null", true, false);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(d.status().message(), "the path is neither a raw image file nor a block device");
}

TEST(DiskFile, TwoWritersCannotShareAnImage) {
  TempFile f;
  auto first = DiskFile::Open(f.path(), false, false);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = DiskFile::Open(f.path(), false, false);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(second.status().message(),
            "the image is in use by another process (it holds a lock on the file)");
  first = absl::InternalError("closed");  // drops the first DiskFile and its lock
  EXPECT_TRUE(DiskFile::Open(f.path(), false, false).ok());
}

TEST(DiskFile, ReadersShareAnImage) {
  TempFile f;
  auto a = DiskFile::Open(f.path(), true, false);
  auto b = DiskFile::Open(f.path(), true, false);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(fcntl(a->fd(), F_GETFL) & O_ACCMODE, O_RDONLY);
  EXPECT_FALSE(DiskFile::Open(f.path(), false, false).ok());  // no writer while they read
}

TEST(DiskFile, DirectOnTmpfsIsExplainedOrWorks) {
  if (access("/dev/shm", W_OK) != 0) GTEST_SKIP() << "no writable /dev/shm";
  TempFile f("/dev/shm");
  auto d = DiskFile::Open(f.path(), false, true);
  if (d.ok()) GTEST_SKIP() << "this kernel's tmpfs supports O_DIRECT";
  EXPECT_EQ(d.status().message(),
            "the image's filesystem does not support O_DIRECT (direct=on); use direct=off");
}

}  // namespace
}  // namespace flint::block
