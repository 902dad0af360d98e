"""A Prio server: open client packets, verify SNIPs in batches, add up valid shares.

Each stage of the protocol is a batch function over opened packets and their
evaluation points:

* verify1: shares of f(r), g(r) give (d, e) = (f(r) - a, g(r) - b);
* verify2: with both servers' (d, e), this server's share of the proof output
  d*e/2 + d*b + e*a + c - h(r) (each server adds half of d*e);
* validity: both verify2 shares sum to zero;
* aggregate: the data shares of valid packets add up to the total share.

Server B receives only a seed and re-expands its shares with the PRG.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import TypeVar

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from . import codec, field, limbs, poly, seal
from .codec import SERVER_A, SERVER_B, ClientPacket, Verify1, Verify2
from .config import Config, Schedule
from .field import INV2, MODULUS
from .fingerprint import settings_mac
from .prg import SEED_BYTES, Prg, PrgKeying, expand_seeds

_T = TypeVar("_T")


def server_index(server_id: str | int) -> int:
    """0 for server A, 1 for server B, from "A"/"B" (any case) or 0/1."""
    if server_id in (SERVER_A, SERVER_B):
        return int(server_id)
    if isinstance(server_id, str) and server_id.upper() in ("A", "B"):
        return SERVER_A if server_id.upper() == "A" else SERVER_B
    raise ValueError(f"server id must be A or B, got {server_id!r}")


class Server:
    """One of the two servers of a batch configuration."""

    def __init__(
        self,
        config: Config,
        server_id: str | int,
        private_key: X25519PrivateKey,
        shared_seed: bytes,
        keying: PrgKeying = PrgKeying.HASHED,
    ) -> None:
        if len(shared_seed) != SEED_BYTES:
            raise ValueError(f"the shared seed must be {SEED_BYTES} bytes, got {len(shared_seed)}")
        self.config = config
        self.index = server_index(server_id)
        self.keying = PrgKeying(keying)
        self._private_key = private_key
        self._shared_seed = shared_seed

    @property
    def server_id(self) -> str:
        return "AB"[self.index]

    def settings_mac(self, schedule: Schedule | None) -> str:
        """The keyed fingerprint of this server's shared settings (see `fingerprint`)."""
        value = Schedule(schedule).value if schedule is not None else ""
        cfg = self.config
        return settings_mac(self._shared_seed, cfg.batch_id, cfg.n_data, self.keying.value, value)

    def private_key_derived(self, info: bytes) -> bytes:
        """A 32-byte key only this server can make: HKDF-SHA256 over its X25519 private key with
        `info` (the partner knows the shared seed, never this key)."""
        secret = self._private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)

    # -- opening packets -----------------------------------------------------

    def open(self, ciphertext: bytes, arrays: frozenset[str] = codec.BOTH_ARRAYS) -> ClientPacket:
        """Decrypt and check one client packet, or raise PacketError.

        `arrays`: which of server A's arrays to decode ({"data", "h"}): verify2
        needs only the h points, aggregate only the data shares.
        """
        plaintext = seal.decrypt(self._private_key, ciphertext)
        cfg = self.config
        return codec.read_client_packet(plaintext, cfg.batch_id, self.index, cfg.n_data, cfg.n_points, arrays)

    def points(self, schedule: Schedule) -> Iterator[int]:
        """Evaluation points: the k-th value is for the k-th packet that opened."""
        prg = Prg.from_seed(self._shared_seed, self.config.batch_id, self.keying)
        lower = self.config.n_data + 2
        if Schedule(schedule) is Schedule.FIXED:
            point = prg.draw_range(lower)
            while True:
                yield point
        while True:
            yield prg.draw_range(lower)

    # -- shares as limbs -------------------------------------------------------

    def data_shares(self, packets: Sequence[ClientPacket]) -> limbs.Limbs:
        """Data shares (4, B, n) of a batch of packets opened with their data shares."""
        if self.index == SERVER_A:
            return limbs.from_item_arrays(_every([p.data_items for p in packets], "data shares"))
        seeds = _every([p.seed for p in packets], "seed")
        return expand_seeds(seeds, self.config.batch_id, self.keying, self.config.n_data)

    def _h_points(self, packets: Sequence[ClientPacket]) -> limbs.Limbs:
        """h points (4, B, N) of a batch of packets opened with their h points."""
        if self.index == SERVER_A:
            return limbs.from_item_arrays(_every([p.h_items for p in packets], "h points"))
        n, big_n = self.config.n_data, self.config.n_points
        seeds = _every([p.seed for p in packets], "seed")
        # The data shares are drawn (h follows them) but never converted.
        return expand_seeds(seeds, self.config.batch_id, self.keying, n + big_n, skip=n)

    # -- evaluation at the random point ------------------------------------------

    def _evaluate_fg(
        self, packets: Sequence[ClientPacket], points: Sequence[int], data: limbs.Limbs | None = None
    ) -> list[tuple[int, int]]:
        """(f(r), g(r)) shares per packet (verify1); `data`: their data shares, if at hand."""
        cfg = self.config
        n, big_n = cfg.n_data, cfg.n_points
        if data is None:
            data = self.data_shares(packets)
        f0 = [p.f0 for p in packets]
        g0 = [p.g0 for p in packets]
        if len(packets) > 1 and len(set(points)) == 1:
            return _fg_at_shared_point(data, f0, g0, points[0], n, big_n, self.index == SERVER_A)
        # g's points are f's but for g(1) and, at server A, minus one on the data points:
        # g(r) follows from f(r) in closed form unless A's data ends far before N.
        tail = _indicator_tail(n, big_n) if self.index == SERVER_A else None
        g_by_tree = self.index == SERVER_A and tail is None
        polys = np.zeros((limbs.LIMBS, len(packets), 1 + g_by_tree, big_n), dtype=np.int64)
        polys[:, :, 0, 0] = limbs.from_ints(f0)
        polys[:, :, 0, 1:n + 1] = data
        if g_by_tree:
            polys[:, :, 1, 0] = limbs.from_ints(g0)
            polys[:, :, 1, 1:n + 1] = data
            polys[0, :, 1, 1:n + 1] -= 1
        out = []
        for k, row in enumerate(_on_roots_at_points(polys, list(points), big_n)):
            f_r = row[0]
            if g_by_tree:
                g_r = row[1]
            else:
                basis = _lagrange_basis_at(points[k], n, big_n, False, self.index == SERVER_A)
                g_r = (f_r + (g0[k] - f0[k]) * basis[0] - basis[1]) % MODULUS
            out.append((f_r, g_r))
        return out

    def _evaluate_h(
        self, packets: Sequence[ClientPacket], points: Sequence[int], h_odd: limbs.Limbs | None = None
    ) -> list[int]:
        """h(r) shares per packet (verify2); `h_odd`: their h points, if at hand."""
        big_n = self.config.n_points
        if h_odd is None:
            h_odd = self._h_points(packets)
        h0 = [p.h0 for p in packets]
        if len(packets) > 1 and len(set(points)) == 1:
            return _h_at_shared_point(h_odd, h0, points[0], big_n)
        return _h_at_points(h_odd, h0, list(points), big_n)

    def verify1(self, packets: Sequence[ClientPacket], points: Sequence[int]) -> list[Verify1]:
        """This server's verify1 packet for each opened packet."""
        if not packets:
            return []
        return _verify1_messages(packets, self._evaluate_fg(packets, points))

    def verify1_and_h(
        self, packets: Sequence[ClientPacket], points: Sequence[int]
    ) -> tuple[list[Verify1], list[int], limbs.Limbs]:
        """verify1 packets, the h(r) shares verify2 will need at the same points and the data
        shares (4, B, n), from one opening of each packet (server B expands its seeds once)."""
        n, big_n = self.config.n_data, self.config.n_points
        if not packets:
            return [], [], limbs.zeros((limbs.LIMBS, 0, n))
        h_odd = None
        if self.index == SERVER_B:
            seeds = _every([p.seed for p in packets], "seed")
            both = expand_seeds(seeds, self.config.batch_id, self.keying, n + big_n)
            data, h_odd = both[:, :, :n], both[:, :, n:]
        else:
            data = self.data_shares(packets)
        messages = _verify1_messages(packets, self._evaluate_fg(packets, points, data))
        return messages, self._evaluate_h(packets, points, h_odd), data

    def verify2(
        self,
        packets: Sequence[ClientPacket],
        points: Sequence[int],
        own: Sequence[Verify1],
        peer: Sequence[Verify1],
    ) -> list[Verify2]:
        """This server's verify2 message for each packet, from both servers' verify1 packets."""
        if not packets:
            return []
        h_values = self._evaluate_h(packets, points)
        return verify2_messages([p.triple for p in packets], h_values, own, peer)


def _verify1_messages(packets: Sequence[ClientPacket], fg: Sequence[tuple[int, int]]) -> list[Verify1]:
    """verify1 messages (f(r) - a, g(r) - b) from each packet's (f(r), g(r)) shares."""
    return [
        Verify1((f_r - p.triple[0]) % MODULUS, (g_r - p.triple[1]) % MODULUS)
        for p, (f_r, g_r) in zip(packets, fg)
    ]


def verify2_messages(
    triples: Sequence[tuple[int, int, int]],
    h_values: Sequence[int],
    own: Sequence[Verify1],
    peer: Sequence[Verify1],
) -> list[Verify2]:
    """verify2 messages from each packet's Beaver triple share and h(r) share, and both
    servers' verify1 packets: d*e/2 + d*b + e*a + c - h(r)."""
    out = []
    for (a, b, c), h_r, mine, theirs in zip(triples, h_values, own, peer):
        d = (mine.d + theirs.d) % MODULUS
        e = (mine.e + theirs.e) % MODULUS
        out.append(Verify2((d * e % MODULUS * INV2 + d * b + e * a + c - h_r) % MODULUS))
    return out


def _every(items: Sequence[_T | None], what: str) -> list[_T]:
    """All of `items`, none missing: a packet opened without a part a stage needs is a bug."""
    present = [item for item in items if item is not None]
    if len(present) != len(items):
        raise ValueError(f"a packet was opened without its {what}")
    return present


def is_valid(verify2_a: Verify2, verify2_b: Verify2) -> bool:
    """A packet is valid when the two servers' verify2 shares sum to zero."""
    return (verify2_a.out + verify2_b.out) % MODULUS == 0


def _s_powers(chains: list[list[int]], rows: int) -> limbs.Limbs:
    """Limbs (4, B, rows, log N) of each packet's square chain, repeated for each row."""
    log_n = len(chains[0])
    return limbs.from_ints(v for chain in chains for _ in range(rows) for v in chain).reshape(
        limbs.LIMBS, len(chains), rows, log_n)


def _on_roots_at_points(polys: limbs.Limbs, points: list[int], big_n: int) -> list[list[int]]:
    """Polynomials through values on the N-th roots (4, B, k, N), each packet at its own
    point, with the O(N) tree and no inversions: f(r) = (r A - (r^N - 1) sum y) / N."""
    rows = polys.shape[2]
    chains = poly.square_chain(points, big_n.bit_length() - 1)
    numerators = limbs.to_ints(poly.tree_numerators(polys, _s_powers(chains, rows)))
    sums = limbs.to_ints(limbs.reduce(polys.sum(axis=-1)))
    inv_n = field.inv(big_n)
    out = []
    for k, r in enumerate(points):
        r_n = chains[k][-1] * chains[k][-1] % MODULUS
        out.append([(r * a - (r_n - 1) * y) * inv_n % MODULUS
                    for a, y in zip(numerators[k * rows:(k + 1) * rows], sums[k * rows:(k + 1) * rows])])
    return out


def _h_at_points(h_odd: limbs.Limbs, h0: list[int], points: list[int], big_n: int) -> list[int]:
    """h through h0 at 1, zeros on the other even 2N-th roots and `h_odd` (4, B, N) on the
    odd ones, each packet at its own point. The odd roots are w2 times the N-th roots,
    so the N-point tree runs at r' = r / w2, where r'^N = -r^N."""
    inv_w2 = field.inv(field.root_of_unity(2 * big_n))
    shifted = [r * inv_w2 % MODULUS for r in points]
    chains = poly.square_chain(shifted, big_n.bit_length() - 1)
    numerators = limbs.to_ints(poly.tree_numerators(h_odd[:, :, None], _s_powers(chains, 1)))
    sums = limbs.to_ints(limbs.reduce(h_odd.sum(axis=-1)))
    inv_2n = field.inv(2 * big_n)
    out = []
    for k, r in enumerate(points):
        r_n = pow(r, big_n, MODULUS)
        odd = -(r_n - 1) * (shifted[k] * numerators[k] + (r_n + 1) * sums[k]) % MODULUS * inv_2n
        even = h0[k] * (r_n - 1) % MODULUS * (r_n + 1) % MODULUS * inv_2n % MODULUS * field.inv(r - 1)
        out.append((odd + even) % MODULUS)
    return out


@lru_cache(maxsize=8)
def _weights_on_roots(point: int, big_n: int) -> limbs.Limbs:
    return limbs.from_ints(poly.lagrange_weights(point, big_n))


@lru_cache(maxsize=8)
def _weights_for_h(point: int, big_n: int) -> tuple[limbs.Limbs, int]:
    """Lagrange weights at `point` on the odd 2N-th roots, and at 1 (for h0)."""
    on_2n = poly.lagrange_weights(point, 2 * big_n)
    return limbs.from_ints(on_2n[1::2]), on_2n[0]


def _fg_at_shared_point(
    data: limbs.Limbs, f0: list[int], g0: list[int], point: int, n: int, big_n: int, indicator: bool
) -> list[tuple[int, int]]:
    """All packets at one point: f(r) is f0 L_0(r) plus the data shares' dot product with
    their weights (computed once per batch), and g(r) follows from f(r) in closed form,
    so that no polynomial is assembled. `indicator`: server A, whose g is minus one on the
    data points."""
    weights = _weights_on_roots(point, big_n)[:, 1:n + 1]
    l0, on_data = _lagrange_basis_at(point, n, big_n, True, indicator)
    out = []
    for f, g, dot in zip(f0, g0, poly.dot(data, weights)):
        f_r = (f * l0 + dot) % MODULUS
        out.append((f_r, (f_r + (g - f) * l0 - on_data) % MODULUS))
    return out


def _h_at_shared_point(h_odd: limbs.Limbs, h0: list[int], point: int, big_n: int) -> list[int]:
    weights, weight_h0 = _weights_for_h(point, big_n)
    return [(o + h * weight_h0) % MODULUS for o, h in zip(poly.dot(h_odd, weights), h0)]


#: Up to this many N-th roots past the data, server A gets g(r) from f(r) in closed form.
_MAX_TAIL = 64


@lru_cache(maxsize=16)
def _indicator_tail(n: int, big_n: int) -> tuple[list[int], list[int]] | None:
    """Coefficients (highest first) of P and Q with P/Q = sum over j in n+1..N-1 of
    w^j / (r - w^j), or None when that tail is too long to be worth it."""
    tail = range(n + 1, big_n)
    if len(tail) > _MAX_TAIL:
        return None
    roots = field.powers(field.root_of_unity(big_n), big_n)
    numerator, denominator = [0], [1]
    for j in tail:  # P/Q + w^j/(r - w^j) = (P (r - w^j) + w^j Q) / (Q (r - w^j))
        shifted_p = [a - roots[j] * b for a, b in zip(numerator + [0], [0] + numerator)]
        scaled_q = [0] + [roots[j] * c for c in denominator]
        numerator = [(a + b) % MODULUS for a, b in zip(shifted_p, scaled_q)]
        denominator = [(a - roots[j] * b) % MODULUS for a, b in zip(denominator + [0], [0] + denominator)]
    return numerator, denominator


def _horner(coefficients: list[int], x: int) -> int:
    acc = 0
    for c in coefficients:
        acc = (acc * x + c) % MODULUS
    return acc


def _lagrange_basis_at(r: int, n: int, big_n: int, shared: bool, indicator: bool) -> tuple[int, int]:
    """(L_0(r), sum of L_j(r) for j = 1..n, or 0 unless `indicator`) on the N-th roots."""
    if shared:
        weights = _shared_weight_sums(r, n, big_n)
        return weights[0], weights[1] if indicator else 0
    r_n = pow(r, big_n, MODULUS)
    inv_n = field.inv(big_n)
    l0 = (r_n - 1) * inv_n % MODULUS * field.inv(r - 1) % MODULUS
    if not indicator:
        return l0, 0
    fraction = _indicator_tail(n, big_n)
    assert fraction is not None  # callers ask for the indicator only when its tail is short
    numerator, denominator = fraction
    q = _horner(denominator, r)
    # sum_j L_j(r) = 1; the tail's L_j(r) = w^j (r^N - 1) / (N (r - w^j)).
    tail = 1 if q == 0 else (r_n - 1) * inv_n % MODULUS * _horner(numerator, r) % MODULUS * field.inv(q)
    return l0, (1 - l0 - tail) % MODULUS


@lru_cache(maxsize=8)
def _shared_weight_sums(point: int, n: int, big_n: int) -> tuple[int, int]:
    weights = limbs.to_ints(_weights_on_roots(point, big_n))
    return weights[0], sum(weights[1:n + 1]) % MODULUS


class TotalShare:
    """Running sum of one server's valid data shares (libprio's PrioTotalShare)."""

    def __init__(self, length: int, server_id: str | int) -> None:
        self.length = length
        self.index = server_index(server_id)
        self._sum = np.zeros((limbs.LIMBS, length), dtype=np.int64)
        self._pending = 0

    def add(self, shares: limbs.Limbs) -> None:
        """Add a batch of data shares (4, B, length)."""
        self._sum += shares.sum(axis=1)
        self._pending += shares.shape[1]
        if self._pending > 1 << 30:  # keep int64 limb sums far from overflow
            self._sum = limbs.reduce(self._sum)
            self._pending = 1

    def merge(self, other: TotalShare) -> None:
        """Add another partial total of the same server and length."""
        if other.index != self.index or other.length != self.length:
            raise ValueError("partial totals of different servers or lengths cannot be merged")
        self._sum = limbs.reduce(limbs.reduce(self._sum) + limbs.reduce(other._sum))
        self._pending = 1

    def folded_uint(self, prec: int) -> TotalShare:
        """Shares of integer totals from shares of bit totals (libprio's PrioTotalShare_set_data_uint)."""
        if prec < 1 or self.length % prec:
            raise ValueError(f"{self.length} bit totals are not a whole number of {prec}-bit integers")
        values = uint_totals(self.values(), prec)
        folded = TotalShare(len(values), self.index)
        folded._sum = limbs.from_ints(values)
        return folded

    def values(self) -> list[int]:
        return limbs.to_ints(self._sum)

    def to_bytes(self) -> bytes:
        return codec.pack_total_share(self.index, limbs.to_bytes11(self._sum))

    @classmethod
    def from_bytes(cls, data: bytes, length: int) -> TotalShare:
        index, rows = codec.read_total_share(data, length)
        total = cls(length, index)
        total._sum = limbs.from_bytes11(rows)
        return total


def final_totals(share_a: TotalShare, share_b: TotalShare) -> list[int]:
    """Per-index totals from A's and B's total shares (libprio's PrioTotalShare_final)."""
    if share_a.index != SERVER_A or share_b.index != SERVER_B:
        raise ValueError("final totals need server A's total share and server B's, in that order")
    if share_a.length != share_b.length:
        raise ValueError("the two total shares have different lengths")
    totals = [(x + y) % MODULUS for x, y in zip(share_a.values(), share_b.values())]
    if any(t >= 1 << 64 for t in totals):
        raise ValueError("a total does not fit in 64 bits: the shares do not belong together")
    return totals


def uint_totals(bit_totals: Sequence[int], prec: int) -> list[int]:
    """Integer totals from per-bit totals of `prec`-bit integers, most significant bit first."""
    if prec < 1 or len(bit_totals) % prec:
        raise ValueError(f"{len(bit_totals)} bit totals are not a whole number of {prec}-bit integers")
    return [
        sum(bit_totals[j * prec + k] << (prec - 1 - k) for k in range(prec)) % MODULUS
        for j in range(len(bit_totals) // prec)
    ]

