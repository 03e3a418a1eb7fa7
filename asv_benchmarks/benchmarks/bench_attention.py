"""hsrgeom.attention: a decoding step through DecodeCache (append one token, attend), ReLU and
softmax attention over n keys, and prefill. Head dim 64 float32 (the shape of real models), and
d = 4 clustered keys (where geometry prunes)."""
import numpy as np

from hsrgeom.attention import DecodeCache, prefill, relu_attention, softmax_attention

HEADS, KV_HEADS = 4, 2


def _qkv(n, d, m, kind):
    rng = np.random.default_rng(n + d)
    if kind == "clustered":
        centers = rng.standard_normal((8, d)) * 3
        k = centers[rng.integers(0, 8, (1, KV_HEADS, n))] + 0.3 * rng.standard_normal((1, KV_HEADS, n, d))
    else:
        k = rng.standard_normal((1, KV_HEADS, n, d))
    q = rng.standard_normal((1, HEADS, m, d))
    v = rng.standard_normal((1, KV_HEADS, n, d))
    return q.astype(np.float32), k.astype(np.float32), v.astype(np.float32)


def _bias(q, k):
    # a bias leaving ~n^0.8 keys per row (the paper's regime), from the first head's scores
    n, d = k.shape[2], k.shape[3]
    s = (k[0, 0].astype(np.float64) @ q[0, 0, 0].astype(np.float64)) / np.sqrt(d)
    return float(np.sort(s)[-max(1, int(n**0.8))])


class Decode:
    params = ([4096, 32768], [4, 64], ["gaussian", "clustered"], ["relu", "softmax"])
    param_names = ["n", "d", "keys", "mode"]
    number = 1
    repeat = (1, 10, 20.0)
    timeout = 300

    def setup(self, n, d, keys, mode):
        if d == 64 and keys == "clustered":
            raise NotImplementedError
        q, k, v = _qkv(n + 1, d, 1, keys)
        self.cache = DecodeCache(output_size=int(n**0.8))
        self.cache.append(k[:, :, :n], v[:, :, :n])
        self.k1, self.v1, self.q = k[:, :, n:], v[:, :, n:], q
        self.kw = dict(bias=_bias(q, k)) if mode == "relu" else dict(top_r=64)

    def time_append_attend(self, n, d, keys, mode):
        self.cache.append(self.k1, self.v1)
        self.cache.attend(self.q, mode=mode, **self.kw)


class Attention:
    """m = 16 query rows over n keys: the index is built inside the call (one per kv head)."""

    params = ([2048, 8192], [4, 64], ["relu", "softmax_top64", "softmax_threshold"])
    param_names = ["n", "d", "mode"]
    timeout = 300

    def setup(self, n, d, mode):
        self.q, self.k, self.v = _qkv(n, d, 16, "clustered" if d == 4 else "gaussian")
        self.bias = _bias(self.q, self.k)

    def time_attention(self, n, d, mode):
        if mode == "relu":
            relu_attention(self.q, self.k, self.v, bias=self.bias)
        elif mode == "softmax_top64":
            softmax_attention(self.q, self.k, self.v, top_r=64)
        else:
            softmax_attention(self.q, self.k, self.v, threshold=self.bias)


class Prefill:
    params = ([512, 2048], ["relu", "softmax"])
    param_names = ["n", "mode"]
    timeout = 300

    def setup(self, n, mode):
        self.q, self.k, self.v = _qkv(n, 16, n, "gaussian")
        self.kw = dict(bias=_bias(self.q, self.k)) if mode == "relu" else dict(top_r=32)

    def time_prefill(self, n, mode):
        prefill(self.q, self.k, self.v, mode=mode, **self.kw)
