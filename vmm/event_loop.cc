// The epoll implementation of EventLoop.
//
// The loop thread alone owns the watch table: Add and Remove called from
// another thread are handed to the loop with RunSync, so a watch is never
// touched by two threads and "Remove returns once the callback is not running"
// holds by construction (the loop is running the Remove, not the callback).
#include "vmm/event_loop.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "vmm/kvm/unique_fd.h"

namespace flint {
namespace {

// Which loop, if any, the current thread runs.
thread_local const EventLoop* current_loop = nullptr;

constexpr int kMaxEvents = 32;

class EpollLoop final : public EventLoop {
 public:
  EpollLoop(UniqueFd epoll, UniqueFd wake) : epoll_(std::move(epoll)), wake_(std::move(wake)) {}

  ~EpollLoop() override {
    if (!thread_.joinable()) return;
    if (InLoopThread()) {
      // Joining ourselves cannot work, and detaching would leave the thread
      // running on freed memory: a bug in the caller.
      std::fprintf(stderr, "flint: event loop destroyed from its own thread\n");
      std::abort();
    }
    {
      absl::MutexLock l(&mu_);
      stop_ = true;
    }
    Wake();
    thread_.join();
  }

  void Start(std::string name) {
    thread_ = std::thread([this, n = std::move(name)] {
      current_loop = this;
      pthread_setname_np(pthread_self(), n.substr(0, 15).c_str());
      Run();
    });
  }

  absl::Status Add(int fd, Callback on_readable) override {
    if (InLoopThread()) return AddOnLoop(fd, std::move(on_readable));
    absl::Status status;
    RunSync([&] { status = AddOnLoop(fd, std::move(on_readable)); });
    return status;
  }

  absl::Status AddWatch(int fd, uint32_t interest, ReadyCallback on_ready) override {
    if (InLoopThread()) return AddWatchOnLoop(fd, interest, std::move(on_ready));
    absl::Status status;
    RunSync([&] { status = AddWatchOnLoop(fd, interest, std::move(on_ready)); });
    return status;
  }

  absl::Status SetInterest(int fd, uint32_t interest) override {
    if (!InLoopThread()) {
      absl::Status status;
      RunSync([&] { status = SetInterest(fd, interest); });
      return status;
    }
    auto it = watches_.find(fd);
    if (it == watches_.end()) {
      return absl::NotFoundError(absl::StrFormat("fd %d is not watched", fd));
    }
    epoll_event ev{};
    ev.events = EpollEvents(interest);
    ev.data.ptr = it->second.get();
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) != 0) {
      return absl::InternalError(
          absl::StrFormat("epoll_ctl(MOD, fd %d) failed: %s", fd, strerror(errno)));
    }
    return absl::OkStatus();
  }

  void Remove(int fd) override {
    if (InLoopThread()) {
      RemoveOnLoop(fd);
      return;
    }
    RunSync([&] { RemoveOnLoop(fd); });
  }

  void Post(Callback fn) override {
    {
      absl::MutexLock l(&mu_);
      if (exited_) {
        // Nothing would ever run it, and a RunSync caller would wait forever:
        // a caller that outlives its loop. Say so instead of hanging.
        std::fprintf(stderr, "flint: work posted to an event loop that has stopped\n");
        std::abort();
      }
      posted_.push_back(std::move(fn));
    }
    Wake();
  }

  void RunSync(const Callback& fn) override {
    if (InLoopThread()) {
      fn();
      return;
    }
    absl::Notification done;
    Post([&] {
      fn();
      done.Notify();
    });
    done.WaitForNotification();
  }

  bool InLoopThread() const override { return current_loop == this; }

 private:
  struct Watch {
    ReadyCallback callback;
    bool removed = false;
  };

  static uint32_t EpollEvents(uint32_t interest) {
    return ((interest & kReadable) ? EPOLLIN : 0u) | ((interest & kWritable) ? EPOLLOUT : 0u);
  }

  absl::Status AddOnLoop(int fd, Callback callback) {
    return AddWatchOnLoop(fd, kReadable, [cb = std::move(callback)](uint32_t) { cb(); });
  }

  absl::Status AddWatchOnLoop(int fd, uint32_t interest, ReadyCallback callback) {
    if (watches_.count(fd) != 0) {
      return absl::AlreadyExistsError(absl::StrFormat("fd %d is already watched", fd));
    }
    auto watch = std::make_unique<Watch>();
    watch->callback = std::move(callback);
    epoll_event ev{};
    ev.events = EpollEvents(interest);
    ev.data.ptr = watch.get();
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return absl::InternalError(
          absl::StrFormat("epoll_ctl(ADD, fd %d) failed: %s", fd, strerror(errno)));
    }
    watches_.emplace(fd, std::move(watch));
    return absl::OkStatus();
  }

  void RemoveOnLoop(int fd) {
    auto it = watches_.find(fd);
    if (it == watches_.end()) return;
    // Fails only if the owner already closed the fd, which epoll handles by
    // itself: nothing to undo.
    epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    // Events for this fd may still sit in the current epoll_wait batch, and
    // the callback may be the one removing itself: keep the watch alive,
    // marked, until the batch is done.
    it->second->removed = true;
    retired_.push_back(std::move(it->second));
    watches_.erase(it);
  }

  void Wake() {
    const uint64_t one = 1;
    // Can fail only with EAGAIN when the counter is about to overflow, and
    // then the loop is already awake.
    ssize_t n = write(wake_.get(), &one, sizeof(one));
    (void)n;
  }

  // Runs what was posted; returns false once the loop must stop.
  bool RunPosted() {
    uint64_t count;
    ssize_t n = read(wake_.get(), &count, sizeof(count));
    (void)n;
    bool stop;
    {
      absl::MutexLock l(&mu_);
      running_.swap(posted_);
      stop = stop_;
    }
    for (auto& fn : running_) fn();
    running_.clear();  // keeps the capacity: no allocation next time
    return !stop;
  }

  void Run() {
    epoll_event events[kMaxEvents];
    for (;;) {
      int n = epoll_wait(epoll_.get(), events, kMaxEvents, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        // Only a corrupted epoll fd gets here; the loop cannot go on, and
        // every RunSync caller would wait forever.
        std::fprintf(stderr, "flint: epoll_wait failed: %s\n", strerror(errno));
        std::abort();
      }
      bool keep_going = true;
      for (int i = 0; i < n; ++i) {
        auto* watch = static_cast<Watch*>(events[i].data.ptr);
        if (watch == nullptr) {
          keep_going = RunPosted() && keep_going;
        } else if (!watch->removed) {
          const uint32_t e = events[i].events;
          uint32_t ready = ((e & EPOLLIN) ? kReadable : 0u) | ((e & EPOLLOUT) ? kWritable : 0u);
          if (e & (EPOLLERR | EPOLLHUP)) ready = kReadable | kWritable;
          watch->callback(ready);
        }
      }
      retired_.clear();
      if (!keep_going) {
        RunLeftovers();
        return;
      }
    }
  }

  // On the way out: callbacks of the last batch, and posted functions
  // themselves, may have posted more after the stop was seen. Runs it all,
  // then refuses new work, so no RunSync caller is left waiting.
  void RunLeftovers() {
    for (;;) {
      {
        absl::MutexLock l(&mu_);
        if (posted_.empty()) {
          exited_ = true;
          return;
        }
        running_.swap(posted_);
      }
      for (auto& fn : running_) fn();
      running_.clear();
    }
  }

  UniqueFd epoll_;
  UniqueFd wake_;  // eventfd; its epoll data is nullptr
  std::thread thread_;

  // Loop thread only.
  std::unordered_map<int, std::unique_ptr<Watch>> watches_;
  std::vector<std::unique_ptr<Watch>> retired_;
  std::vector<Callback> running_;

  absl::Mutex mu_;
  std::vector<Callback> posted_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool exited_ ABSL_GUARDED_BY(mu_) = false;  // the loop thread is done with posted work
};

}  // namespace

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create(const std::string& name) {
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll.valid()) {
    return absl::InternalError(absl::StrFormat("epoll_create1 failed: %s", strerror(errno)));
  }
  UniqueFd wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) {
    return absl::InternalError(absl::StrFormat("eventfd failed: %s", strerror(errno)));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  if (epoll_ctl(epoll.get(), EPOLL_CTL_ADD, wake.get(), &ev) != 0) {
    return absl::InternalError(
        absl::StrFormat("epoll_ctl(ADD) of the wake eventfd failed: %s", strerror(errno)));
  }
  auto loop = std::make_unique<EpollLoop>(std::move(epoll), std::move(wake));
  loop->Start(name);
  return std::unique_ptr<EventLoop>(std::move(loop));
}

}  // namespace flint
