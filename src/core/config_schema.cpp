// Every configuration key: name, default, checks and a one-line doc. This is
// the only place a key is declared; add new keys here.
#include "core/config_schema.h"

namespace smoe::detail {
namespace {

struct OptimDefaults {
  int64_t epochs;
  int64_t batch_size;
  double lr;
  double weight_decay;
  std::string schedule;
  std::string optimizer = "sgd";
};

void describe_optim(Schema& s, const std::string& p, OptimConfig& o, const OptimDefaults& d) {
  s.add(p + ".optimizer", o.optimizer, d.optimizer,
        "sgd (momentum, Nesterov), adam (betas 0.9, 0.999; weight decay as L2) or adamw (decoupled weight decay)")
      .one_of({"sgd", "adam", "adamw"});
  s.add(p + ".epochs", o.epochs, d.epochs, "training epochs").at_least(0);
  s.add(p + ".batch_size", o.batch_size, d.batch_size, "mini-batch size (samples per step)").at_least(1);
  s.add(p + ".lr", o.lr, d.lr, "peak learning rate").above(0);
  s.add(p + ".momentum", o.momentum, 0.9, "SGD momentum").at_least(0).at_most(1);
  s.add(p + ".weight_decay", o.weight_decay, d.weight_decay, "L2 weight decay").at_least(0);
  s.add(p + ".nesterov", o.nesterov, true, "Nesterov momentum");
  s.add(p + ".schedule", o.schedule, d.schedule, "learning-rate schedule").one_of({"cosine", "step", "constant"});
  s.add(p + ".step_epochs", o.step_epochs, std::vector<int64_t>{}, "epochs where 'step' multiplies lr by step_gamma")
      .at_least(1);
  s.add(p + ".step_gamma", o.step_gamma, 0.1, "lr factor at each step epoch").above(0);
  s.add(p + ".warmup_epochs", o.warmup_epochs, int64_t{0}, "linear warm-up epochs").at_least(0);
  s.add(p + ".label_smoothing", o.label_smoothing, 0.0, "label smoothing of the cross-entropy")
      .at_least(0)
      .at_most(0.99);
  s.add(p + ".grad_clip", o.grad_clip, 0.0, "clip the gradient's global L2 norm to this (0 = no clipping)").at_least(0);
  s.add(p + ".precision", o.precision, std::string("float32"),
        "bfloat16: the forward passes autocast to bfloat16 (weights, gradients and optimiser state stay float32) "
        "where the hardware computes it natively (AVX-512 BF16 or AMX CPUs, GPUs of compute capability 8.0+); "
        "float16: autocast to float16 on GPUs, with dynamic loss scaling (on a CPU the passes run in float32, the "
        "scaler still on); auto: the fastest the device computes natively (bfloat16, else float16 on a GPU, else "
        "float32); where a request cannot run, float32 runs and the report says why")
      .one_of({"float32", "bfloat16", "float16", "auto"});
  s.add(p + ".channels_last", o.channels_last, false,
        "convolution weights in channels-last memory format while training (oneDNN's and cuDNN's preferred "
        "layout: the same arithmetic in another summation order; checkpoints are saved in the usual layout)");
}

// Krishnamurthy et al. Section 6 (train/moe_losses.h).
void describe_regularizers(Schema& s, const std::string& p, RegularizerConfig& r) {
  s.add(p + ".importance", r.importance, 0.0, "w of the importance loss w * CV(sum over the batch of g(k|x))^2")
      .at_least(0);
  s.add(p + ".load_balance", r.load_balance, 0.0,
        "lambda of the load-balance loss lambda * mean_e (u_e - mean u)^2, u_e = sum over the batch of g(e|x) (LEMUR)")
      .at_least(0);
  s.add(p + ".similarity_same", r.similarity_same, 0.0,
        "beta_s of the sample-similarity loss: pulls same-expert pairs together (M = P'DP / B^2)")
      .at_least(0);
  s.add(p + ".diversity", r.diversity, 0.0,
        "lambda of the diversity loss: mean pairwise cosine similarity of the experts' mean output distributions "
        "over the samples routed to them (LEMUR)")
      .at_least(0);
  s.add(p + ".similarity_diff", r.similarity_diff, 0.0,
        "beta_d of the sample-similarity loss: pushes different-expert pairs apart (M = P'DP / B^2)")
      .at_least(0);
}

}  // namespace

Schema describe(Config& c) {
  Schema s;
  s.add("seed", c.seed, int64_t{0}, "run seed; every random stream derives from it").at_least(0);
  s.add("scheme", c.scheme, std::string("algorithm1"),
        "training scheme, an ordered list of stages (each scheme's: docs/configuration.md): algorithm1 (Royer et "
        "al. Algorithm 1), em (Algorithm 1, then em.steps EM rounds), dfcp (DFCP-MoE: labels relabelled from a "
        "trusted subset before clustering), joint (gate and experts trained together, Krishnamurthy et al.), "
        "joint_distill (joint, then the gate distilled with the experts frozen) or algorithm1_finetune (Algorithm 1, "
        "then its MoE trained further as a jointly trained one: stage finetune)");

  s.add("data.path", c.data.path, std::string(), "dataset folder made by smoe-data convert");
  s.add("data.train_split", c.data.train_split, std::string("train"), "split to train on");
  s.add("data.test_split", c.data.test_split, std::string("test"), "split to evaluate on");
  s.add("data.limit_train", c.data.limit_train, int64_t{0}, "use the first N training samples (0 = all)").at_least(0);
  s.add("data.limit_test", c.data.limit_test, int64_t{0}, "use the first N test samples (0 = all)").at_least(0);
  s.add("data.storage", c.data.storage, std::string("auto"),
        "memory: load splits whole; stream: random HDF5 reads; auto: memory below the budget")
      .one_of({"auto", "memory", "stream"});
  s.add("data.cache_mb", c.data.cache_mb, int64_t{256},
        "HDF5 chunk cache per open shard when streaming (MiB); a split's caches together take at most a quarter "
        "of what runtime.memory_budget_mb leaves")
      .at_least(1);
  s.add("data.verify", c.data.verify, std::string("hash"),
        "shards checked against the manifest before training: hash (SHA-256, cached per run folder), size, off")
      .one_of({"hash", "size", "off"});
  s.add("data.prefetch", c.data.prefetch, int64_t{2}, "batches prepared ahead by the loader thread (0 = none)")
      .at_least(0);
  s.add("data.crop_padding", c.data.crop_padding, int64_t{2},
        "augmentation: zero padding (pixels) before the random crop")
      .at_least(0);
  s.add("data.hflip", c.data.hflip, true, "augmentation: random horizontal flips");
  s.add("data.label_noise", c.data.label_noise, 0.0,
        "symmetric label noise: this share of the training labels (outside the trusted subset) is replaced by "
        "another class, chosen by a hash of (seed, id); the test split stays clean")
      .at_least(0)
      .at_most(1);
  s.add("data.trusted_fraction", c.data.trusted_fraction, 0.05,
        "share of the training samples (chosen by a hash of (seed, id)) forming the trusted labelled subset: never "
        "noisy, and what the pseudo_label stage (scheme dfcp) labels the others from")
      .at_least(0)
      .at_most(1);

  s.add("model.arch", c.model.arch, std::string("tiny_resnet"), "network family").one_of({"tiny_resnet", "plain_cnn"});
  s.add("model.depth", c.model.depth, int64_t{10}, "tiny_resnet depth (10, 18 or 34)").at_least(10).at_most(34);
  s.add("model.width", c.model.width, int64_t{16},
        "channels of the first stage (doubled at every down-sampling); small_cnn: channels of its convolution")
      .at_least(1);
  s.add("model.hidden", c.model.hidden, std::vector<int64_t>{128, 64},
        "small_cnn experts and gates (Krishnamurthy et al. Appendix B): sizes of the two hidden layers")
      .at_least(1);

  s.add("base.checkpoint", c.base.checkpoint, std::string(),
        "load the base model from this state dict instead of training it");
  s.add("base.augment", c.base.augment, true, "augment the base model's training batches (random crop and flip)");
  describe_optim(s, "base", c.base.optim, {10, 128, 0.1, 5e-4, "cosine"});
  s.add("base.micro_batch", c.base.micro_batch, int64_t{32},
        "samples per micro-batch; gradients are summed exactly over micro-batches so results do not depend on the rank "
        "count")
      .at_least(1);
  s.add("base.bn_calibration", c.base.bn_calibration, int64_t{4096},
        "training samples used to recompute BatchNorm statistics after training")
      .at_least(1);

  s.add("pseudo.dim", c.pseudo.dim, int64_t{64}, "pseudo_label: output dimension of the Siamese projection")
      .at_least(1);
  s.add("pseudo.steps", c.pseudo.steps, int64_t{600}, "pseudo_label: training steps of the projection").at_least(1);
  s.add("pseudo.batch_size", c.pseudo.batch_size, int64_t{256}, "pseudo_label: pairs of trusted samples per step")
      .at_least(2);
  s.add("pseudo.lr", c.pseudo.lr, 1e-3, "pseudo_label: Adam learning rate").above(0);
  s.add("pseudo.margin", c.pseudo.margin, 1.0,
        "pseudo_label: contrastive margin on the distance of L2-normalised projections (in [0, 2])")
      .above(0)
      .at_most(2);
  s.add("pseudo.validation", c.pseudo.validation, 0.2,
        "pseudo_label: share of the trusted subset held out to choose the similarity threshold tau by F1")
      .above(0)
      .at_most(0.9);

  s.add("cluster.method", c.cluster.method, std::string("kmeans"),
        "initial gate: kmeans (per-sample K-means), per_class (clustering of class-mean embeddings) or dfcp "
        "(DFCP-MoE's double-stage clustering)");
  s.add("cluster.features", c.cluster.features, std::string(),
        "per-sample features to cluster (and pseudo-label) instead of the base model's embeddings: an HDF5 file "
        "with a float dataset /features [N, D] read by rows, or a torch file (.pt: a tensor [N, D] or a dict with "
        "'features', read whole), row i for training sample i; empty: the base model's embeddings");
  s.add("cluster.restarts", c.cluster.restarts, int64_t{4}, "K-means restarts; the lowest inertia wins").at_least(1);
  s.add("cluster.max_iter", c.cluster.max_iter, int64_t{100}, "Lloyd iterations per restart").at_least(1);
  s.add("cluster.tol", c.cluster.tol, 1e-4, "stop when centroids move less than tol x mean feature variance")
      .at_least(0);
  s.add("cluster.normalize", c.cluster.normalize, true, "L2-normalise embeddings before clustering");
  s.add("cluster.silhouette_sample", c.cluster.silhouette_sample, int64_t{2000},
        "training rows (chosen by a hash of their id) the cluster-quality report computes the silhouette on")
      .at_least(2);
  s.add("cluster.dfcp.k_max", c.cluster.dfcp_k_max, int64_t{0},
        "dfcp stage 1: K-means for every K from experts.count to k_max, the lowest Davies-Bouldin index wins "
        "(0: 2 x experts.count)")
      .at_least(0);
  s.add("cluster.dfcp.neighbours", c.cluster.dfcp_neighbours, int64_t{3},
        "dfcp stage 2: clusters are ranked by how many others count them among their this-many nearest clusters; "
        "the experts.count best become the reference clusters")
      .at_least(1);
  s.add("cluster.dfcp.thetas", c.cluster.dfcp_thetas,
        std::vector<double>{0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0},
        "dfcp stage 2: distance thresholds swept, in units of the reference clusters' mean radius; a row joins its "
        "nearest reference centroid when closer than the threshold, else it is an outlier");
  s.add("cluster.dfcp.min_coverage", c.cluster.dfcp_min_coverage, 0.9,
        "dfcp stage 2: the threshold with the lowest Davies-Bouldin index among those keeping at least this share of "
        "the rows wins")
      .at_least(0)
      .at_most(1);

  s.add(
      "gate.kind", c.gate.kind, std::string("linear"),
      "gate: linear (on the base model's pre-logits); scheme joint: cnn (a small CNN on the images), attentive "
      "(attends to the experts' last hidden layers), noisy (cnn + learned Gaussian noise in training, Shazeer et al.) "
      "or tempered (cnn / a learned temperature in [0.5, 5] + N(0, 0.1^2) noise in training, LEMUR)");
  s.add("gate.temperature", c.gate.temperature, 0.1, "T in g0(k|x) = softmax_k(-|x - c_k|^2 / T)").above(0);
  s.add("gate.hard", c.gate.hard, false, "one-hot g0 (nearest centroid) instead of the softmax");
  describe_optim(s, "gate", c.gate.optim, {20, 256, 0.05, 0.0, "cosine"});

  s.add("experts.count", c.experts.count, int64_t{4}, "number of experts K").at_least(1);
  s.add("experts.arch", c.experts.arch, std::string("branch"),
        "expert architecture: branch (the base model's blocks after branch_after, started from its weights) or "
        "small_cnn (Krishnamurthy et al.'s one convolution and two hidden layers), alexnet, densenet, bagnet or mlp "
        "(LEMUR's "
        "families, models/backbones.h); all but branch start from scratch");
  s.add("experts.archs", c.experts.archs, std::vector<std::string>{},
        "heterogeneous experts: expert k's architecture is archs[k mod size] (e.g. [alexnet, densenet, bagnet, "
        "small_cnn]); empty: experts.arch for every expert");
  s.add("experts.optims", c.experts.optims, std::vector<std::string>{},
        "per-expert optimiser settings (Algorithm 1's expert tasks): expert k trains with the experts.* optimiser "
        "keys overridden by optims[k mod size], space-separated key=value pairs (e.g. ['lr=0.05', "
        "'optimizer=adamw lr=0.001 weight_decay=0.05']); empty: the same settings for every expert");
  s.add("experts.gamma", c.experts.gamma, 0.1, "gamma in w_k = clip(g0(k|x), gamma, 1)").at_least(0).at_most(1);
  s.add("experts.branch_after", c.experts.branch_after, int64_t{3},
        "blocks of the base model shared and frozen by every expert (block 0 is the stem); in the joint scheme, "
        "the shared trunk trained with the gate and experts (0: the experts read the images)")
      .at_least(0);
  s.add("experts.depth", c.experts.depth, int64_t{0},
        "branch experts: the tiny_resnet depth (10, 18 or 34) of their blocks, for Royer et al.'s Table 1 (0: the "
        "base model's). Blocks the base has are started from its weights; blocks it lacks start as the identity "
        "(last BatchNorm scale 0)")
      .at_least(0);
  s.add("experts.fuse", c.experts.fuse, int64_t{1},
        "branch experts trained together: experts [g*fuse, (g+1)*fuse) are one task, one pass over the data "
        "with their convolutions stacked as grouped convolutions (same samples in the same order for the "
        "group; needs weighting: reweight, one architecture and optimiser for all). 1: one task per expert")
      .at_least(1);
  s.add("experts.weighting", c.experts.weighting, std::string("reweight"),
        "reweight: loss weighted by w_k; sample: batches drawn with probability proportional to w_k")
      .one_of({"reweight", "sample"});
  s.add("experts.augment", c.experts.augment, false,
        "augment the experts' training batches (turns the trunk cache off)");
  s.add("experts.trunk_cache", c.experts.trunk_cache, std::string("auto"),
        "the frozen trunk's features, computed once (not with augmentation): memory (every rank), disk (spilled "
        "to the run folder), auto (memory within runtime.memory_budget_mb, else disk), off (recomputed per batch)")
      .one_of({"auto", "memory", "disk", "off"});
  describe_optim(s, "experts", c.experts.optim, {5, 128, 0.02, 5e-4, "cosine"});

  s.add("ensembler.kind", c.ensembler.kind, std::string("bagging"),
        "how d_k combines base and expert in the anytime model and the E-step: bagging or stacking");
  describe_optim(s, "ensembler", c.ensembler.optim, {2, 256, 0.01, 0.0, "cosine"});

  s.add("em.steps", c.em.steps, int64_t{0}, "EM rounds N_E after Algorithm 1 (0 = Algorithm 1 only)").at_least(0);
  s.add("em.expert_epochs", c.em.expert_epochs, int64_t{1}, "expert epochs in each M-step").at_least(0);

  s.add("joint.micro_batch", c.joint.micro_batch, int64_t{64},
        "scheme joint: samples per micro-batch; gradients are summed exactly over micro-batches so results do not "
        "depend on the rank count")
      .at_least(1);
  s.add("joint.top_k", c.joint.top_k, int64_t{0},
        "route each sample to its k most probable experts (softmax over those k; an expert computes only its samples); "
        "0 = every expert (dense soft routing)")
      .at_least(0);
  s.add("joint.gate_lr_scale", c.joint.gate_lr_scale, 1.0, "the gate's learning rate is this times joint.lr").above(0);
  s.add("joint.mixup", c.joint.mixup, 0.0,
        "mixup's alpha: each micro-batch mixed with a permutation of itself by lambda ~ Beta(alpha, alpha); 0 = off")
      .at_least(0);
  s.add("joint.conditional", c.joint.conditional, false,
        "DFCP-MoE's conditional training: each expert's gradient (from the mixture and from its own cross-entropy, "
        "which is added) comes only from samples of the classes it owns (joint.class_owner)");
  s.add("joint.class_owner", c.joint.class_owner, std::vector<int64_t>{},
        "joint.conditional: the expert that owns each class, one entry per class (empty: class c goes to expert "
        "c * experts / classes)");
  describe_regularizers(s, "joint", c.joint.reg);
  describe_optim(s, "joint", c.joint.optim, {20, 512, 1e-3, 0.0, "constant", "adam"});
  s.add("distill.gate_kind", c.distill.gate_kind, std::string("cnn"),
        "distill stage: the gate kind trained on the frozen experts (started from the trained gate's shared layers)");
  describe_regularizers(s, "distill", c.distill.reg);
  describe_optim(s, "distill", c.distill.optim, {10, 512, 1e-3, 0.0, "constant", "adam"});
  s.add("finetune.freeze_experts", c.finetune.freeze_experts, false,
        "finetune stage: train only Algorithm 1's gate on its frozen experts (a gate trained on frozen experts, "
        "Krishnamurthy et al. Section 4.2) instead of gate and experts together");
  describe_regularizers(s, "finetune", c.finetune.reg);
  describe_optim(s, "finetune", c.finetune.optim, {2, 256, 1e-4, 0.0, "constant", "adam"});

  s.add("eval.taus", c.eval.taus,
        std::vector<double>{0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0},
        "thresholds of the anytime model")
      .at_least(0)
      .at_most(1);
  s.add("eval.batch_size", c.eval.batch_size, int64_t{500}, "evaluation batch size").at_least(1);
  s.add("eval.timing_samples", c.eval.timing_samples, int64_t{1000},
        "test samples on which the coordinator measures the wall-clock inference time per sample of the base model, "
        "the top-1 MoE and the anytime model (0: not measured)")
      .at_least(0);
  s.add("eval.class_oracle", c.eval.class_oracle, false, "per_class only: also report routing by the true class");

  s.add("runtime.threads", c.runtime.threads, int64_t{0},
        "intra-op threads per rank (0: SLURM_CPUS_PER_TASK inside Slurm, else the cores the rank is bound to, else the "
        "node's cores divided by its ranks)")
      .at_least(0);
  s.add("runtime.device", c.runtime.device, std::string("auto"),
        "the device type (auto: CUDA when available; privateuseone: an out-of-tree libtorch backend, such as the "
        "tests' fake accelerator); each rank's device follows from the devices it sees (any Slurm GPU binding)")
      .one_of({"auto", "cpu", "cuda", "privateuseone"});
  s.add("runtime.log_every", c.runtime.log_every, int64_t{50}, "training steps between progress lines").at_least(1);
  s.add("runtime.memory_budget_mb", c.runtime.memory_budget_mb, int64_t{8192},
        "RAM per rank for smoe's caches (MiB): a data split loads whole when it fits (data.storage auto), then "
        "the trunk features stay in RAM when they fit in what is left (experts.trunk_cache auto)")
      .at_least(1);
  s.add("runtime.device_memory_budget_mb", c.runtime.device_memory_budget_mb, int64_t{2048},
        "device memory per rank for smoe's caches when runtime.device is not the CPU (MiB): the experts' trunk "
        "features, cached in RAM, are kept on the device too when they fit, so that batches need no copy (0: never)")
      .at_least(0);
  s.add("runtime.stall_timeout_s", c.runtime.stall_timeout_s, 1800.0,
        "abort the job, naming the rank, when a rank makes no progress (or every rank waits) this long; 0 = never")
      .at_least(0);
  return s;
}

}  // namespace smoe::detail
