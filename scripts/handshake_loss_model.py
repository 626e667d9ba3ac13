#!/usr/bin/env python3
"""What a DTLS 1.2 handshake can reach through random loss, on RFC 6347's timers.

An event model of the full handshake as this crate runs it (flights packed one
datagram each; round trips on loopback take no time):

  ClientHello -> HelloVerifyRequest      only the client's timer drives it (the
                                         server keeps no state);
  ClientHello with cookie -> flight 4    the server's connection starts; both
                                         timers drive it (the server also
                                         resends on a copy of the hello);
  client flight 5 -> server flight 6     only the client's timer drives it (the
                                         server answers each copy of flight 5).

Timers: each flight starts at `--initial` seconds and doubles up to 60 s. The
client gives up at its handshake deadline (`--client-deadline`, 60 s); the
server ends a connection whose peer is silent for its silence limit (10 s,
doubled by every datagram heard and at least twice the longest gap seen) or
60 s after it began.

  scripts/handshake_loss_model.py                 # the default settings and variants
  scripts/handshake_loss_model.py --check-csv F   # per seed, against a handshake_loss CSV

With `--check-csv`, every handshake of the CSV's `reactor`/`socket` rows with
`drop=` only is replayed through the model with the relay's own drop decisions
(`tests/common/relay/`: the same PRNG, the same seed, one drop draw per
datagram and direction), and the failures predicted are compared with those
measured.
"""
import argparse
import csv
import heapq
import random
import re
from collections import Counter

MASK = (1 << 64) - 1


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


class RelayRng:
    """tests/common/relay/faults.rs `Rng`: splitmix64 seeding, xorshift64*."""

    def __init__(self, seed):
        self.s = splitmix64(seed) | 1

    def next(self):
        x = self.s
        x ^= x >> 12
        x ^= (x << 25) & MASK
        x ^= x >> 27
        self.s = x
        return (x * 0x2545F4914F6CDD1D) & MASK

    def unit(self):
        return (self.next() >> 11) * (1.0 / (1 << 53))


# Draws `relay::decide` takes per datagram, whatever happens to it.
DRAWS_PER_DATAGRAM = 17


class RelayDrops:
    """The drop decisions the relay makes for its first client (number 0)."""

    def __init__(self, seed, p):
        base = splitmix64(seed ^ splitmix64(0))
        self.rngs = [RelayRng(base), RelayRng(base ^ 0xD1B54A32D192ED03)]
        self.p = p

    def delivered(self, direction):
        r = self.rngs[direction]
        lost = r.unit() < self.p
        for _ in range(DRAWS_PER_DATAGRAM - 1):
            r.next()
        return not lost


class RandomDrops:
    def __init__(self, p, rng):
        self.p, self.rng = p, rng

    def delivered(self, _direction):
        return self.rng.random() >= self.p


TO_SERVER, TO_CLIENT = 0, 1


def handshake(net, initial=1.0, cap=60.0, client_deadline=60.0, silence=10.0,
              server_deadline=60.0):
    """One handshake; 'ok' or what ended it."""
    t, timeout = 0.0, initial
    while True:  # the cookie exchange
        if t > client_deadline:
            return 'cookie exchange: client deadline'
        if net.delivered(TO_SERVER) and net.delivered(TO_CLIENT):
            break
        t += timeout
        timeout = min(timeout * 2, cap)
    events = [(t, 0, 'client sends')]
    seq = 1
    client = {'flight': 3, 'timeout': initial, 'gen': 0}
    server = None

    def push(at, what):
        nonlocal seq
        heapq.heappush(events, (at, seq, what))
        seq += 1

    while events:
        now, _, what = heapq.heappop(events)
        if now > client_deadline:
            dead = server is not None and server['dead']
            return 'flight %d: client deadline%s' % (
                client['flight'], ' (server ended it for silence)' if dead else '')
        if server and not server['done'] and not server['dead']:
            if now > min(server['heard'] + server['silence'],
                         server['start'] + server_deadline):
                server['dead'] = True
        kind = what[0] if isinstance(what, tuple) else what
        if kind == 'client sends':
            if net.delivered(TO_SERVER):
                push(now, ('server hears', client['flight']))
            push(now + client['timeout'], ('client timer', client['gen']))
        elif kind == 'client timer':
            if what[1] == client['gen']:
                client['timeout'] = min(client['timeout'] * 2, cap)
                push(now, 'client sends')
        elif kind == 'server hears':
            flight = what[1]
            if server is None:
                if flight == 3:
                    server = {'start': now, 'heard': now, 'silence': silence,
                              'timeout': initial, 'flight': 4, 'gen': 0,
                              'done': False, 'dead': False}
                    push(now, 'server sends')
                continue
            if server['dead']:
                continue
            if not server['done']:
                gap = now - server['heard']
                server['silence'] = max(server['silence'] * 2, gap * 2)
                server['heard'] = now
            if flight == 3 and server['flight'] == 4:
                push(now, 'server sends')
            elif flight == 5:
                if server['flight'] == 4:
                    server.update(flight=6, done=True)
                    server['gen'] += 1
                push(now, 'server sends')
        elif kind == 'server sends':
            if server['dead']:
                continue
            if net.delivered(TO_CLIENT):
                push(now, ('client hears', server['flight']))
            if server['flight'] == 4:  # the last flight has no timer
                push(now + server['timeout'], ('server timer', server['gen']))
        elif kind == 'server timer':
            if what[1] == server['gen'] and not server['dead']:
                server['timeout'] = min(server['timeout'] * 2, cap)
                push(now, 'server sends')
        elif kind == 'client hears':
            flight = what[1]
            if flight == 4 and client['flight'] == 3:
                client.update(flight=5, timeout=initial)
                client['gen'] += 1
                push(now, 'client sends')
            elif flight == 6 and client['flight'] == 5:
                return 'ok'
    return 'stuck'


VARIANTS = [
    ('defaults (1 s timer, client 60 s, server silence 10 s)', {}),
    ('client deadline 120 s', dict(client_deadline=120.0)),
    ('client deadline 120 s, server silence 20 s', dict(client_deadline=120.0, silence=20.0)),
    ('initial timer 0.5 s', dict(initial=0.5)),
    ('initial timer 0.25 s', dict(initial=0.25)),
    ('initial timer 0.1 s', dict(initial=0.1)),
]


def table(loss, n, seed):
    rng = random.Random(seed)
    print('%d handshakes per row, %.0f %% loss each way, independent per datagram' % (n, loss * 100))
    print('| settings | complete | what ended the others (% of all) |')
    print('|---|---|---|')
    for label, kw in VARIANTS:
        c = Counter(handshake(RandomDrops(loss, rng), **kw) for _ in range(n))
        rest = '; '.join('%s %.2f' % (k, v * 100 / n) for k, v in c.most_common() if k != 'ok')
        print('| %s | %.2f %% | %s |' % (label, c['ok'] * 100 / n, rest))


def check(path):
    rows = list(csv.DictReader(open(path)))
    groups = {}
    for r in rows:
        m = re.fullmatch(r'drop=(\d+)%', r['faults'])
        if r['pair'] in ('reactor', 'socket') and m:
            groups.setdefault((r['pair'], r['faults'], int(m.group(1)) / 100), []).append(r)
    for (pair, faults, loss), rs in sorted(groups.items()):
        model = {int(r['seed']) for r in rs
                 if handshake(RelayDrops(int(r['seed']), loss)) != 'ok'}
        real = {int(r['seed']) for r in rs if r['ok'] != 'true'}
        print('%s %s: %d handshakes; failed: measured %d, model %d, both %d; '
              'measured only: seeds %s; model only: seeds %s' % (
                  pair, faults, len(rs), len(real), len(model), len(real & model),
                  sorted(real - model), sorted(model - real)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--loss', type=float, default=0.3)
    ap.add_argument('--count', type=int, default=100000)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--check-csv')
    a = ap.parse_args()
    if a.check_csv:
        check(a.check_csv)
    else:
        table(a.loss, a.count, a.seed)


if __name__ == '__main__':
    main()
