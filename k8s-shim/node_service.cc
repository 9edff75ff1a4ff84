#include "k8s-shim/node_service.h"

#include <grpcpp/grpcpp.h>

#include "k8s-shim/hypervisor_info.h"

namespace flint::shim {
namespace {

// absl and gRPC share the canonical status codes and their numbering.
grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

grpc::Status NotNodeSocket() {
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      "flint-shim: the Node service is served on --node-socket only");
}

}  // namespace

grpc::Status NodeService::AddVm(grpc::ServerContext* ctx, const v1::AddVmRequest* in,
                                v1::AddVmResponse*) {
  if (!server_->FromNodeSocket(ctx)) return NotNodeSocket();
  return ToGrpc(server_->AddSlot(in->id(), in->launcher_socket(), in->backend(), in->pod_root()));
}

grpc::Status NodeService::RemoveVm(grpc::ServerContext* ctx, const v1::RemoveVmRequest* in,
                                   v1::RemoveVmResponse*) {
  if (!server_->FromNodeSocket(ctx)) return NotNodeSocket();
  return ToGrpc(server_->RemoveSlot(in->id(), in->kill()));
}

grpc::Status NodeService::ListVms(grpc::ServerContext* ctx, const v1::ListVmsRequest*,
                                  v1::ListVmsResponse* out) {
  if (!server_->FromNodeSocket(ctx)) return NotNodeSocket();
  for (v1::VmRecord& r : server_->ListSlots()) *out->add_vms() = std::move(r);
  return grpc::Status::OK;
}

grpc::Status NodeService::GetHypervisorInfo(grpc::ServerContext* ctx,
                                            const v1::GetHypervisorInfoRequest*,
                                            v1::GetHypervisorInfoResponse* out) {
  if (!server_->FromNodeSocket(ctx)) return NotNodeSocket();
  absl::StatusOr<v1::GetHypervisorInfoResponse> info = ProbeHypervisor(*programs_);
  if (!info.ok()) return ToGrpc(info.status());
  *out = std::move(*info);
  return grpc::Status::OK;
}

}  // namespace flint::shim
