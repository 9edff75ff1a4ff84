// A DeviceHost that records what devices ask of the VM, for unit tests of
// PCI and virtio devices without KVM.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "vmm/device_host.h"

namespace flint::testing {

class FakeDeviceHost : public DeviceHost {
 public:
  struct Route {
    uint64_t address = 0;
    uint32_t data = 0;
  };
  class Vector : public MsiVector {
   public:
    Vector(FakeDeviceHost* host, int id) : host_(host), id_(id) {}
    absl::Status SetRoute(uint64_t address, uint32_t data) override {
      absl::MutexLock l(&host_->mu_);
      host_->routes_[id_] = Route{address, data};
      return absl::OkStatus();
    }
    void Fire() override {
      absl::MutexLock l(&host_->mu_);
      host_->fired_.push_back(id_);
    }

   private:
    FakeDeviceHost* host_;
    int id_;
  };
  class Line : public IrqLine {
   public:
    Line(FakeDeviceHost* host, uint32_t gsi) : host_(host), gsi_(gsi) {}
    void Set(bool level) override {
      absl::MutexLock l(&host_->mu_);
      host_->intx_[gsi_] = level;
    }

   private:
    FakeDeviceHost* host_;
    uint32_t gsi_;
  };

  absl::StatusOr<std::unique_ptr<MsiVector>> AllocateMsi() override {
    absl::MutexLock l(&mu_);
    return std::unique_ptr<MsiVector>(new Vector(this, next_vector_++));
  }
  std::unique_ptr<IrqLine> IntxLine(uint32_t gsi) override {
    return std::make_unique<Line>(this, gsi);
  }
  absl::Status AddIoeventfd(int fd, uint64_t addr, uint32_t len) override {
    absl::MutexLock l(&mu_);
    ioeventfds_[{addr, len}] = fd;
    return absl::OkStatus();
  }
  absl::Status RemoveIoeventfd(int fd, uint64_t addr, uint32_t len) override {
    absl::MutexLock l(&mu_);
    auto it = ioeventfds_.find({addr, len});
    if (it == ioeventfds_.end() || it->second != fd) {
      return absl::NotFoundError("no such ioeventfd");
    }
    ioeventfds_.erase(it);
    return absl::OkStatus();
  }

  // Vector ids in allocation order (0, 1, ...), each time one fired.
  std::vector<int> fired() const {
    absl::MutexLock l(&mu_);
    return fired_;
  }
  void clear_fired() {
    absl::MutexLock l(&mu_);
    fired_.clear();
  }
  Route route(int id) const {
    absl::MutexLock l(&mu_);
    auto it = routes_.find(id);
    return it == routes_.end() ? Route{} : it->second;
  }
  bool intx(uint32_t gsi) const {
    absl::MutexLock l(&mu_);
    auto it = intx_.find(gsi);
    return it != intx_.end() && it->second;
  }
  // (address, len) -> fd
  std::map<std::pair<uint64_t, uint32_t>, int> ioeventfds() const {
    absl::MutexLock l(&mu_);
    return ioeventfds_;
  }

 private:
  mutable absl::Mutex mu_;
  int next_vector_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> fired_ ABSL_GUARDED_BY(mu_);
  std::map<int, Route> routes_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, bool> intx_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<uint64_t, uint32_t>, int> ioeventfds_ ABSL_GUARDED_BY(mu_);
};

}  // namespace flint::testing
