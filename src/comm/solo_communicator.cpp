#include "comm/solo_communicator.h"

#include <cstring>

#include "core/error.h"

namespace smoe::comm {
namespace {

void check_root(int root, const char* what) { SMOE_CHECK(root == 0, "{}: root rank {} of a group of one", what, root); }

}  // namespace

void SoloCommunicator::broadcast(Buffer, int root) { check_root(root, "broadcast"); }

void SoloCommunicator::allreduce(Buffer, ReduceOp) {}

void SoloCommunicator::allgather(Buffer send, Buffer recv) {
  SMOE_CHECK(recv.count == send.count && recv.dtype == send.dtype,
             "allgather: receive buffer holds {} elements, expected {}", recv.count, send.count);
  SMOE_CHECK(!send.device.cuda && !recv.device.cuda, "allgather: the solo communicator takes host buffers");
  if (send.data != recv.data && send.bytes() > 0) std::memcpy(recv.data, send.data, send.bytes());
}

std::vector<std::string> SoloCommunicator::gather_bytes(std::string_view bytes, int root) {
  check_root(root, "gather");
  return {std::string(bytes)};
}

void SoloCommunicator::send(int dest, int tag, std::string_view payload) {
  SMOE_CHECK(dest == 0, "send: destination rank {} of a group of one", dest);
  mailbox_.push_back(Message{0, tag, std::string(payload)});
}

Message SoloCommunicator::recv(int source, int tag) {
  std::optional<Message> m = try_recv(source, tag);
  // Nothing else could ever send it: waiting would hang.
  SMOE_CHECK(m.has_value(), "recv: no message with tag {} was sent to a group of one", tag);
  return *m;
}

std::optional<Message> SoloCommunicator::try_recv(int source, int tag) {
  SMOE_CHECK(source == 0 || source == kAnySource, "recv: source rank {} of a group of one", source);
  for (auto it = mailbox_.begin(); it != mailbox_.end(); ++it)
    if (it->tag == tag) {
      Message m = std::move(*it);
      mailbox_.erase(it);
      return m;
    }
  return std::nullopt;
}

void SoloCommunicator::abort(int code, const std::string& why) { fail("aborted with code {}: {}", code, why); }

}  // namespace smoe::comm
