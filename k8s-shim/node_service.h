// The per-node shim's own service, flint.shim.v1.Node, on --node-socket:
// which launcher sockets the shim serves (AddVm, RemoveVm, ListVms) and the
// hypervisor report for KubeVirt's hypervisor abstraction layer
// (GetHypervisorInfo). Only connections that came in on the node socket may
// call it; a launcher-socket connection gets PERMISSION_DENIED.
#pragma once

#include "k8s-shim/backend.h"
#include "k8s-shim/shim_server.h"
#include "shim.grpc.pb.h"

namespace flint::shim {

class NodeService final : public flint::shim::v1::Node::Service {
 public:
  // `server` and `programs` outlive the service.
  NodeService(ShimServer* server, const BackendPrograms* programs)
      : server_(server), programs_(programs) {}

  grpc::Status AddVm(grpc::ServerContext* ctx, const flint::shim::v1::AddVmRequest* in,
                     flint::shim::v1::AddVmResponse* out) override;
  grpc::Status RemoveVm(grpc::ServerContext* ctx, const flint::shim::v1::RemoveVmRequest* in,
                        flint::shim::v1::RemoveVmResponse* out) override;
  grpc::Status ListVms(grpc::ServerContext* ctx, const flint::shim::v1::ListVmsRequest* in,
                       flint::shim::v1::ListVmsResponse* out) override;
  grpc::Status GetHypervisorInfo(grpc::ServerContext* ctx,
                                 const flint::shim::v1::GetHypervisorInfoRequest* in,
                                 flint::shim::v1::GetHypervisorInfoResponse* out) override;

 private:
  ShimServer* const server_;
  const BackendPrograms* const programs_;
};

}  // namespace flint::shim
