"""Property test of the policy scripts themselves, against a real redis-server: a seeded random
interleaving of admissions (and replays of them), settlements inside usage batches (and
repeats), take-backs, lease renewals and replicas that die without settling (their leases
lapse), over several keys with random limits. After every step:

- never past a limit: the requests admitted in the window <= rpm, unexpired slots <=
  max_concurrent, and for every budget used + held <= the limit (so used alone stays within
  it, real usage being within what was reserved);
- the bookkeeping adds up: the held sums equal the reservations recorded, the tpm window's
  sum equals its entries;
- every verdict is the right one, computed independently from the state Redis held just
  before (not checked within 50 ms of a lease expiring or of the window's edge, where the
  two clocks may disagree);
- replaying an admission, settling twice, or taking an admission back twice changes nothing.

The scripts are the ones the proxies run (`api-proxy-admin script NAME`). AP_POLICY_SEED and
AP_POLICY_STEPS pick the seed (printed) and the number of steps.
"""

import datetime
import os
import random
import time
import unittest

from lib import harness as h

P = "pt:"
STEPS = int(os.environ.get("AP_POLICY_STEPS", "400"))


class Key:
    def __init__(self, rng, n):
        self.id = "%016x" % (0xabc000 + n)
        self.base = P + "pl:" + self.id + ":"
        pick = lambda lo, hi: rng.randint(lo, hi) if rng.random() < 0.7 else -1
        self.rpm = pick(3, 25)
        self.tpm = pick(400, 3000)
        self.cc = pick(1, 4)
        self.daily_tokens = pick(500, 4000)
        self.monthly_tokens = pick(800, 6000)
        self.daily_nano = pick(50000, 400000)
        self.monthly_nano = pick(80000, 600000)
        self.lease = rng.choice([150, 250, 400])
        if self.cc < 0 and self.rpm < 0 and self.tpm < 0 and self.budgets() == 0:
            self.cc = 3

    def budgets(self):
        return sum(1 for x in (self.daily_tokens, self.monthly_tokens, self.daily_nano, self.monthly_nano)
                   if x >= 0)

    def leased(self):
        return self.cc >= 0 or self.budgets() > 0

    def __repr__(self):
        return "Key(%s rpm=%d tpm=%d cc=%d dt=%d mt=%d dn=%d mn=%d lease=%d)" % (
            self.id[-3:], self.rpm, self.tpm, self.cc, self.daily_tokens, self.monthly_tokens,
            self.daily_nano, self.monthly_nano, self.lease)


class PolicyScriptProperties(h.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.rc = cls.redis.client()
        cls.sha = h.load_admin_scripts(cls.rc, ("admit", "flush", "renew"))

    # ---- Redis views -----------------------------------------------------------------
    def now(self):
        s, us = self.rc.cmd("TIME")
        return int(s) * 1000 + int(us) // 1000

    def state(self, key):
        """Everything about one key, as plain values (compared before/after no-op steps); one
        round trip. What the key used is its counters plus its lines still in the usage journal
        (read, not folded: the admission must fold them itself)."""
        b = key.base
        days_wanted = self.month_days()
        r = self.rc.pipeline([("ZRANGE", b + "win", 0, -1, "WITHSCORES"), ("HGETALL", b + "tv"),
                              ("ZRANGE", b + "live", 0, -1, "WITHSCORES"), ("HGETALL", b + "adm"),
                              ("HGETALL", b + "r"), ("LRANGE", P + "u:journal", 0, -1),
                              ] + [("HGETALL", P + "u:kd:%s:%s" % (key.id, d)) for d in days_wanted])
        hsh = lambda x: dict(zip(x[0::2], x[1::2]))
        zs = lambda x: {m: int(float(v)) for m, v in zip(x[0::2], x[1::2])}
        days = [hsh(x) for x in r[6:]]   # the month's days so far, today last
        tok = lambda x: int(x.get("input", 0)) + int(x.get("output", 0))
        used_t = [tok(x) for x in days]
        used_n = [int(x.get("cost", 0)) for x in days]
        for line in r[5]:
            f = line.split("\t")
            if f[0] == key.id and f[2][:10] in days_wanted:
                i = days_wanted.index(f[2][:10])
                used_t[i] += int(f[5]) + int(f[6])
                used_n[i] += int(f[9])
        return {"win": zs(r[0]), "tv": hsh(r[1]), "live": zs(r[2]), "adm": hsh(r[3]), "r": hsh(r[4]),
                "used": (used_t[-1], sum(used_t), used_n[-1], sum(used_n))}

    def month_days(self):
        return ["%s-%02d" % (self.day[:7], n) for n in range(1, int(self.day[8:]) + 1)]

    # ---- the operations --------------------------------------------------------------
    def admit(self, key, aid, need_t, need_n):
        args = [P, key.id, aid, key.lease if key.leased() else 0, key.rpm, key.tpm, key.cc, self.day,
                key.daily_tokens, key.monthly_tokens, key.daily_nano, key.monthly_nano,
                need_t if key.tpm >= 0 else 0,
                need_t if key.daily_tokens >= 0 or key.monthly_tokens >= 0 else 0,
                need_n if key.daily_nano >= 0 or key.monthly_nano >= 0 else 0]
        return self.rc.cmd("EVALSHA", self.sha["admit"], 0, *args)

    def batch(self, ops, lines=()):
        """One usage batch (the flush script): usage journal lines and settlements, applied once."""
        self.seq += 1
        argv = [P + "flush:pt:s", self.seq, P, len(lines)] + list(lines)
        for op in ops:
            argv += list(op)
        return self.rc.cmd("EVALSHA", self.sha["flush"], 0, *argv)

    def usage_line(self, key, tokens, cost):
        """A served request's journal line: it reaches u:kd only when the journal is folded (by
        the batch that fills it, or by an admission that reads a budget)."""
        inp = tokens // 2
        return "%s\t1\t%s 12:00\tm\t1\t%d\t%d\t0\t0\t%d\t%d" % (key.id, self.day, inp, tokens - inp, cost,
                                                                 self.now())

    # ---- the independent verdict ------------------------------------------------------
    def expected(self, key, st, now, need_t, need_n):
        """(code, uncertain): what admission must answer given the state before it."""
        uncertain = False
        edge = 50
        if any(abs(e - now) < edge for e in st["live"].values()):
            uncertain = True
        live_held = {a for a, e in st["live"].items() if e > now}
        # lapsed leases release their reservations first
        held_t = held_n = 0
        for a, rec in st["adm"].items():
            if a in live_held:
                t, n = (int(x) for x in rec.split())
                held_t += t
                held_n += n
        win = st["win"]
        if any(abs(ts - (now - 60000)) < edge for ts in win.values()):
            uncertain = True
        inwin = [a for a, ts in win.items() if ts > now - 60000]
        tsum = sum(int(st["tv"].get(a, 0)) for a in inwin)
        if key.rpm >= 0 and len(inwin) >= key.rpm:
            return 1, uncertain
        if key.tpm >= 0 and tsum >= key.tpm:
            return 2, uncertain
        if key.cc >= 0 and len(live_held) >= key.cc:
            return 3, uncertain
        used = st["used"]
        rt = need_t if key.daily_tokens >= 0 or key.monthly_tokens >= 0 else 0
        rn = need_n if key.daily_nano >= 0 or key.monthly_nano >= 0 else 0
        for code, lim, u, held, need in ((4, key.daily_tokens, used[0], held_t, rt),
                                         (5, key.monthly_tokens, used[1], held_t, rt),
                                         (6, key.daily_nano, used[2], held_n, rn),
                                         (7, key.monthly_nano, used[3], held_n, rn)):
            if lim >= 0 and u + held + need > lim:
                return code, uncertain
        return 0, uncertain

    # ---- the invariants -----------------------------------------------------------------
    def check(self, key, st, now, admitted_at, where):
        tv = {a: int(v) for a, v in st["tv"].items() if a != "sum"}
        self.assertEqual(int(st["tv"].get("sum", 0)), sum(tv.values()), "%s: tpm sum %r" % (where, st["tv"]))
        held_t = sum(int(r.split()[0]) for r in st["adm"].values())
        held_n = sum(int(r.split()[1]) for r in st["adm"].values())
        self.assertEqual((int(st["r"].get("t", 0)), int(st["r"].get("n", 0))), (held_t, held_n),
                         "%s: held sums %r vs %r" % (where, st["r"], st["adm"]))
        self.assertEqual(set(st["adm"]), set(st["live"]), "%s: leases and reservations differ" % where)
        if key.rpm >= 0:
            recent = [t for t in admitted_at.values() if t > now - 60000]
            self.assertLessEqual(len(recent), key.rpm, "%s: rpm passed" % where)
        if key.cc >= 0:
            self.assertLessEqual(sum(1 for e in st["live"].values() if e > now), key.cc,
                                 "%s: max_concurrent passed" % where)
        used = st["used"]
        for lim, u, held, what in ((key.daily_tokens, used[0], held_t, "daily_tokens"),
                                   (key.monthly_tokens, used[1], held_t, "monthly_tokens"),
                                   (key.daily_nano, used[2], held_n, "daily_usd"),
                                   (key.monthly_nano, used[3], held_n, "monthly_usd")):
            if lim >= 0:
                self.assertLessEqual(u + held, lim, "%s: %s passed: used %d + held %d > %d"
                                     % (where, what, u, held, lim))

    def test_random_interleavings_keep_every_limit(self):
        seed = int(os.environ.get("AP_POLICY_SEED", "0")) or random.randrange(1, 10**9)
        print("  >>> seed %d (AP_POLICY_SEED=%d to replay), %d steps" % (seed, seed, STEPS), flush=True)
        rng = random.Random(seed)
        self.seq = 0
        self.day = "2026-02-26"  # a month end comes early
        keys = [Key(rng, n) for n in range(3)]
        flight = {k.id: {} for k in keys}      # admission id -> (need_t, need_n)
        admitted_at = {k.id: {} for k in keys}  # admission id -> its time in the window
        settled = {k.id: [] for k in keys}     # ids already settled (for repeats)
        counts = {"admitted": 0, "refused": 0, "settled": 0, "killed": 0, "replays": 0, "checked": 0,
                  "journal": 0}
        # The replicas' leases lapse only when they stop renewing (killed): a live one that
        # stopped renewing for a whole lease (Redis unreachable that long) may overrun a budget
        # by its request, which README documents.
        n_id = 0
        last_renew = [time.monotonic()]
        shortest = min(k.lease for k in keys) / 1000.0

        def renew_alive(force=False):
            """Live replicas renew their leases every lease/4; only killed ones lapse."""
            if not force and time.monotonic() - last_renew[0] < shortest / 4:
                return
            for k in keys:
                ids = sorted(flight[k.id])
                if ids and k.leased():
                    self.rc.cmd("EVALSHA", self.sha["renew"], 0, k.lease, *[x for a in ids for x in (k.base, a)])
            last_renew[0] = time.monotonic()

        def sleep_alive(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                renew_alive(True)
                time.sleep(min(shortest / 4, max(0.0, end - time.monotonic())))

        def covered():
            return counts["admitted"] > 20 and counts["refused"] > 5 and counts["checked"] > STEPS // 5

        # STEPS steps, more (up to 3x) when a seed's limits are so tight that the run has
        # not yet exercised enough admissions and refusals to mean something.
        step = -1
        while True:
            step += 1
            if step >= STEPS and (covered() or step >= 3 * STEPS):
                break
            renew_alive()
            if rng.random() < 0.03:
                # A new day (now and then a new month): budgets start again; reservations of
                # requests still in flight count against the new period too.
                nxt = datetime.date.fromisoformat(self.day) + datetime.timedelta(days=1)
                self.day = nxt.isoformat()
            key = rng.choice(keys)
            f = flight[key.id]
            r = rng.random()
            where = "seed %d step %d %r" % (seed, step, key)
            if r < 0.45:
                n_id += 1
                aid = "t.%x" % n_id
                need_t = rng.randint(20, 300)
                need_n = rng.randint(2000, 40000)
                before = self.state(key)
                if key.budgets() and any(x.startswith(key.id) for x in self.rc.cmd("LRANGE", P + "u:journal", 0, -1)):
                    counts["journal"] += 1  # its budget is judged with usage still in the journal
                now = self.now()
                want, uncertain = self.expected(key, before, now, need_t, need_n)
                got = self.admit(key, aid, need_t, need_n)
                self.assertEqual(len(got), 6, where)
                if not uncertain:
                    counts["checked"] += 1
                    self.assertEqual(got[0], want, "%s: verdict %r, want %d; state before %r"
                                     % (where, got, want, before))
                if got[0] == 0:
                    counts["admitted"] += 1
                    f[aid] = (need_t, need_n)
                    ts = self.rc.cmd("ZSCORE", key.base + "win", aid)
                    admitted_at[key.id][aid] = int(float(ts)) if ts is not None else now
                    # a replay of the same admission counts nothing twice
                    snap = self.state(key)
                    self.assertEqual(self.admit(key, aid, need_t, need_n)[0], 0, where)
                    self.assertEqual(self.state(key), snap, "%s: replay changed the state" % where)
                    counts["replays"] += 1
                else:
                    counts["refused"] += 1
                    after = self.state(key)  # a refusal records nothing (lapsed leases may be swept)
                    self.assertNotIn(aid, after["adm"], where)
                    self.assertNotIn(aid, after["win"], where)
                    self.assertEqual(after["used"], before["used"], where)
            elif r < 0.75 and f:
                aid = rng.choice(sorted(f))
                need_t, need_n = f.pop(aid)
                undo = rng.random() < 0.1
                if undo:  # refused after all (POLICY_FAIL_MODE=closed after a lost answer)
                    self.batch([("p", key.base, aid, -1)])
                    admitted_at[key.id].pop(aid)  # no longer counted in the window
                else:
                    real = rng.randint(0, need_t)  # the usage stays within the reservation
                    cost = rng.randint(0, need_n)
                    self.batch([("p", key.base, aid, real)], [self.usage_line(key, real, cost)])
                    counts["settled"] += 1
                settled[key.id].append(aid)
                # settling again (another batch) changes nothing
                snap = self.state(key)
                self.batch([("p", key.base, aid, -1 if undo else real)])
                self.assertEqual(self.state(key), snap, "%s: a second settlement changed the state" % where)
            elif r < 0.82 and f:
                # a replica killed: its admission is never settled, its lease must lapse
                aid = rng.choice(sorted(f))
                f.pop(aid)
                counts["killed"] += 1
            elif r < 0.9 and f:
                ids = sorted(f)
                self.rc.cmd("EVALSHA", self.sha["renew"], 0, key.lease, *[x for a in ids for x in (key.base, a)])
            else:
                sleep_alive(rng.choice([0.01, 0.05, key.lease / 1000.0 + 0.06]))
            self.check(key, self.state(key), self.now(), admitted_at[key.id], where)
        # Everything settles or lapses: nothing stays held.
        for key in keys:
            for aid in sorted(flight[key.id]):
                self.batch([("p", key.base, aid, 0)])
        time.sleep(max(k.lease for k in keys) / 1000.0 + 0.1)
        for key in keys:
            if key.leased():
                self.admit(key, "final", 0, 0)  # sweeps what lapsed
                self.batch([("p", key.base, "final", 0)])
            st = self.state(key)
            self.assertEqual(st["live"], {}, key)
            self.assertEqual((int(st["r"].get("t", 0)), int(st["r"].get("n", 0))), (0, 0), key)
            # Nothing in flight leaves no per-key state behind but the window (61 s TTL).
            self.assertEqual(self.rc.cmd("EXISTS", key.base + "r", key.base + "adm", key.base + "live"), 0, key)
        print("  >>> %r after %d steps" % (counts, step), flush=True)
        self.assertGreater(counts["admitted"], 20)
        self.assertGreater(counts["refused"], 5)
        self.assertGreater(counts["checked"], STEPS // 5)
        if any(k.budgets() for k in keys):
            self.assertGreater(counts["journal"], 0)


if __name__ == "__main__":
    unittest.main()
