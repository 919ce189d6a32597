#include "comm/thread_communicator.h"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "comm/reduce.h"
#include "core/error.h"

namespace smoe::comm {

struct ThreadGroup::State {
  explicit State(int n) : size(n), slots(n), mailboxes(n) {}

  const int size;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  uint64_t generation = 0;
  bool aborted = false;
  std::string abort_reason;
  std::vector<const void*> slots;  // what each rank posts for the current collective

  struct Mailbox {
    std::deque<Message> queue;
  };
  std::vector<Mailbox> mailboxes;  // guarded by mu; waiters use cv

  void throw_if_aborted() const {
    if (aborted) fail("thread group aborted: {}", abort_reason);
  }

  // Every rank arrives before any leaves.
  void barrier() {
    std::unique_lock<std::mutex> lock(mu);
    throw_if_aborted();
    uint64_t gen = generation;
    if (++arrived == size) {
      arrived = 0;
      ++generation;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return generation != gen || aborted; });
      throw_if_aborted();
    }
  }

  void abort(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    if (!aborted) abort_reason = why;
    aborted = true;
    cv.notify_all();
  }
};

namespace {

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<ThreadGroup::State> s, int rank) : s_(std::move(s)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return s_->size; }
  std::string name() const override { return "threads"; }

  void barrier() override { s_->barrier(); }

  // Post a pointer, meet, let fn read every rank's post, meet again so that
  // nobody's memory is released while another rank still reads it.
  template <typename Fn>
  void rendezvous(const void* post, Fn&& fn) {
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      s_->slots[rank_] = post;
    }
    s_->barrier();
    fn(s_->slots);
    s_->barrier();
  }

  void broadcast(Buffer buf, int root) override {
    check_host(buf, "broadcast");
    check_root(root);
    rendezvous(buf.data, [&](const std::vector<const void*>& slots) {
      if (rank_ != root) std::memcpy(buf.data, slots[root], buf.bytes());
    });
  }

  void allreduce(Buffer buf, ReduceOp op) override {
    check_host(buf, "allreduce");
    std::vector<char> acc(buf.bytes());
    rendezvous(buf.data, [&](const std::vector<const void*>& slots) {
      // Every rank reduces in rank order, so all get bit-identical results.
      std::memcpy(acc.data(), slots[0], acc.size());
      for (int r = 1; r < s_->size; ++r) reduce_into(acc.data(), slots[r], buf.count, buf.dtype, op);
    });
    std::memcpy(buf.data, acc.data(), acc.size());
  }

  void allgather(Buffer send, Buffer recv) override {
    check_host(send, "allgather");
    check_host(recv, "allgather");
    SMOE_CHECK(recv.count == send.count * static_cast<size_t>(s_->size),
               "allgather: receive buffer holds {} elements, expected {}", recv.count, send.count * s_->size);
    rendezvous(send.data, [&](const std::vector<const void*>& slots) {
      for (int r = 0; r < s_->size; ++r)
        std::memcpy(static_cast<char*>(recv.data) + r * send.bytes(), slots[r], send.bytes());
    });
  }

  std::vector<std::string> gather_bytes(std::string_view bytes, int root) override {
    check_root(root);
    std::vector<std::string> out;
    rendezvous(&bytes, [&](const std::vector<const void*>& slots) {
      if (rank_ != root) return;
      for (int r = 0; r < s_->size; ++r) out.emplace_back(*static_cast<const std::string_view*>(slots[r]));
    });
    return out;
  }

  void send(int dest, int tag, std::string_view payload) override {
    SMOE_CHECK(dest >= 0 && dest < s_->size, "send: destination rank {} out of range", dest);
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->throw_if_aborted();
    s_->mailboxes[dest].queue.push_back(Message{rank_, tag, std::string(payload)});
    s_->cv.notify_all();
  }

  Message recv(int source, int tag) override {
    std::unique_lock<std::mutex> lock(s_->mu);
    for (;;) {
      if (auto m = take_locked(source, tag)) return *m;
      s_->cv.wait(lock);
    }
  }

  std::optional<Message> try_recv(int source, int tag) override {
    std::lock_guard<std::mutex> lock(s_->mu);
    return take_locked(source, tag);
  }

  [[noreturn]] void abort(int code, const std::string& why) override {
    s_->abort(fmt::format("rank {} aborted with code {}: {}", rank_, code, why));
    fail("rank {} aborted with code {}: {}", rank_, code, why);
  }

 private:
  // The first message of this rank's mailbox matching (source, tag); s_->mu held.
  std::optional<Message> take_locked(int source, int tag) {
    s_->throw_if_aborted();
    auto& q = s_->mailboxes[rank_].queue;
    for (auto it = q.begin(); it != q.end(); ++it) {
      if (it->tag == tag && (source == kAnySource || it->source == source)) {
        Message m = std::move(*it);
        q.erase(it);
        return m;
      }
    }
    return std::nullopt;
  }

  static void check_host(const Buffer& b, const char* op) {
    SMOE_CHECK(!b.device.cuda, "{}: the in-process communicator handles host buffers only", op);
  }
  void check_root(int root) const {
    SMOE_CHECK(root >= 0 && root < s_->size, "root rank {} out of range [0, {})", root, s_->size);
  }

  std::shared_ptr<ThreadGroup::State> s_;
  int rank_;
};

}  // namespace

ThreadGroup::ThreadGroup(int size) : state_(std::make_shared<State>(size)) {
  SMOE_CHECK(size >= 1, "thread group needs at least one rank, got {}", size);
}
ThreadGroup::~ThreadGroup() = default;

std::unique_ptr<Communicator> ThreadGroup::communicator(int rank) {
  SMOE_CHECK(rank >= 0 && rank < state_->size, "rank {} out of range", rank);
  return std::make_unique<ThreadCommunicator>(state_, rank);
}

void ThreadGroup::abort(const std::string& why) { state_->abort(why); }

void run_ranks(int ranks, const std::function<void(Communicator&)>& fn) {
  ThreadGroup group(ranks);
  std::vector<std::exception_ptr> errors(ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      auto comm = group.communicator(r);
      try {
        fn(*comm);
      } catch (const std::exception& e) {
        errors[r] = std::current_exception();
        group.abort(fmt::format("rank {} threw: {}", r, e.what()));
      } catch (...) {
        errors[r] = std::current_exception();
        group.abort(fmt::format("rank {} threw", r));
      }
    });
  }
  for (auto& t : threads) t.join();
  // Prefer the original error over the "group aborted" errors it caused.
  std::exception_ptr first;
  for (auto& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      if (std::string(ex.what()).rfind("thread group aborted", 0) != 0) std::rethrow_exception(e);
      if (!first) first = e;
    }
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace smoe::comm
