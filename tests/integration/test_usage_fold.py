"""The usage journal, against a real redis-server, with the scripts the proxies run
(`api-proxy-admin script flush|fold`): a usage batch appends its lines to {p}u:journal (a
plain RPUSH behind a header naming the batch, or the flush script with settlements), and
the fold turns them into exactly the counters docs/redis.md lists, summing the lines of one
key, model, outcome and hour first. Batches are applied once; a full journal folds itself;
every reader (the views) folds before reading, so what they show is exact at once.
"""

import unittest

from lib import harness as h

P = "fj:"
ID = "0123456789abcdef"
DAY = "2024-03-01"
HOUR = "2024-03-01 00:00"
WHEN = 1709224200000
FOLD_LINES = 128  # AP_USAGE_FOLD_LINES


def line(model="claude-x", ok=1, n=1, inp=100, out=50, cc=10, cr=20, cost=0, when=WHEN, hour=HOUR, kid=ID):
    return "\t".join(str(x) for x in (kid, ok, hour, model, n, inp, out, cc, cr, cost, when))


def totals(what, n, inp, out, cc, cr, cost=0):
    d = {what: n, "input": inp, "output": out, "cache_creation": cc, "cache_read": cr, "cost": cost}
    return {k: v for k, v in d.items() if v != 0}


def per_model(model, n, inp, out, cost=0, pre="", full=True):
    d = {pre + "m:%s:total" % model: inp + out, pre + "m:%s:requests" % model: n,
         pre + "m:%s:cost" % model: cost}
    if full:
        d.update({pre + "m:%s:input" % model: inp, pre + "m:%s:output" % model: out})
    return {k: v for k, v in d.items() if v != 0}


class UsageJournalTest(h.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.rc = cls.redis.client()
        cls.sha = h.load_admin_scripts(cls.rc, ("flush", "fold"))

    def setUp(self):
        self.rc.cmd("FLUSHDB")
        self.seq = 0

    def flush(self, lines, quads=(), seq=None, mark=P + "flush:t:s"):
        """A batch with settlements, as replicas write it: the flush script, numbered."""
        self.seq += 1
        argv = [mark, seq or self.seq, P, len(lines)] + list(lines)
        for q in quads:
            argv += list(q)
        return self.rc.cmd("EVALSHA", self.sha["flush"], 0, *argv)

    def append(self, lines, seq, mark=P + "flush:t:j"):
        """A batch of lines only, as replicas write it: a plain RPUSH behind its header."""
        header = "#%s\t%d\t%d" % (mark, seq, len(lines))
        return self.rc.cmd("RPUSH", P + "u:journal", header, *lines)

    def fold(self):
        return self.rc.cmd("EVALSHA", self.sha["fold"], 0, P)

    def hashes(self):
        """Every hash under the prefix, as {name without prefix: {field: int}}; sets apart."""
        out, sets = {}, {}
        for k in self.rc.cmd("KEYS", P + "*"):
            t = self.rc.cmd("TYPE", k)
            if t == "hash":
                v = self.rc.cmd("HGETALL", k)
                out[k[len(P):]] = {f: int(x) for f, x in zip(v[0::2], v[1::2])}
            elif t == "set":
                sets[k[len(P):]] = set(self.rc.cmd("SMEMBERS", k))
        return out, sets

    def test_one_served_request_becomes_exactly_its_counters(self):
        self.assertEqual(self.flush([line(cost=4500)]), 1)
        # In the journal, not yet in the counters.
        self.assertEqual(self.rc.cmd("LLEN", P + "u:journal"), 1)
        self.assertEqual(self.rc.cmd("EXISTS", P + "u:all"), 0)
        self.assertEqual(self.fold(), 1)
        self.assertEqual(self.rc.cmd("EXISTS", P + "u:journal"), 0)
        hs, sets = self.hashes()
        tot = totals("requests", 1, 100, 50, 10, 20, 4500)
        mod = per_model("claude-x", 1, 100, 50, 4500)
        kmod = per_model("claude-x", 1, 100, 50, 4500, pre="k:%s:" % ID, full=False)
        want = {
            "u:all": tot,
            "u:k:" + ID: dict(tot, last_used_ms=WHEN),
            "u:kd:%s:%s" % (ID, DAY): dict(tot, **mod),
            "u:kh:%s:%s" % (ID, HOUR): dict(tot, **mod),
            "u:km:" + ID: mod,
            "u:d:" + DAY: dict(tot, **mod, **kmod, **{"k:%s:input" % ID: 100, "k:%s:output" % ID: 50,
                                                      "k:%s:requests" % ID: 1, "k:%s:cost" % ID: 4500}),
            "u:h:" + HOUR: dict(tot, **mod, **kmod),
        }
        self.assertEqual(hs, want)
        self.assertEqual(sets, {"u:kdays:" + ID: {DAY}, "u:khours:" + ID: {HOUR}, "u:days": {DAY},
                                "u:hours": {HOUR}})

    def test_errors_and_refusals_reach_only_the_totals(self):
        self.flush([line(ok=0, n=2, inp=0, out=0, cc=0, cr=0), line(ok=2, n=3, inp=0, out=0, cc=0, cr=0)])
        self.assertEqual(self.fold(), 2)
        hs, sets = self.hashes()
        both = {"errors": 2, "refused": 3}
        self.assertEqual(hs, {"u:all": both, "u:k:" + ID: both, "u:kd:%s:%s" % (ID, DAY): both,
                              "u:d:" + DAY: both})
        self.assertEqual(sets, {})  # never a bucket, a model or "last used"

    def test_lines_of_one_tuple_are_summed_before_they_are_counted(self):
        # Three batches: two lines of the same key/model/outcome/hour, one of another model.
        self.flush([line(inp=100, out=50, when=WHEN - 5000)])
        self.flush([line(inp=1, out=2, cc=0, cr=0, when=WHEN)])
        self.flush([line(model="gpt-4o", inp=7, out=0, cc=0, cr=0, when=WHEN - 9000)])
        self.assertEqual(self.rc.cmd("LLEN", P + "u:journal"), 3)
        self.fold()
        hs, _ = self.hashes()
        self.assertEqual(hs["u:all"], totals("requests", 3, 108, 52, 10, 20))
        self.assertEqual(hs["u:k:" + ID]["last_used_ms"], WHEN)  # the latest, whatever the order
        self.assertEqual(hs["u:km:" + ID], dict(per_model("claude-x", 2, 101, 52), **per_model("gpt-4o", 1, 7, 0)))
        self.assertEqual(hs["u:d:" + DAY]["k:%s:requests" % ID], 3)
        # A later fold adds to what is there; last_used_ms never goes back.
        self.flush([line(inp=1, out=1, cc=0, cr=0, when=WHEN - 60000)])
        self.fold()
        hs, _ = self.hashes()
        self.assertEqual(hs["u:all"]["requests"], 4)
        self.assertEqual(hs["u:k:" + ID]["last_used_ms"], WHEN)

    def test_a_batch_is_applied_once(self):
        mark = P + "flush:replica:nonce:s"
        self.assertEqual(self.flush([line()], seq=1, mark=mark), 1)
        self.assertEqual(self.flush([line()], seq=1, mark=mark), 0)  # resent after a lost reply
        self.assertEqual(self.rc.cmd("LLEN", P + "u:journal"), 1)
        self.fold()
        self.assertEqual(self.flush([line()], seq=1, mark=mark), 0)  # even once folded
        self.assertEqual(self.flush([line()], seq=2, mark=mark), 1)  # the next one
        self.assertEqual(self.flush([line()], seq=1, mark=mark), 0)  # an older one, written again
        self.fold()
        self.assertEqual(self.rc.cmd("HGET", P + "u:all", "requests"), "2")
        # One key per replica process, however many batches: the highest number applied.
        self.assertEqual(self.rc.cmd("GET", mark), "2")
        self.assertTrue(86000 < self.rc.cmd("TTL", mark) <= 86400)
        self.assertEqual(self.rc.cmd("KEYS", P + "flush:*"), [mark])

    def test_an_appended_batch_is_applied_once_by_the_fold(self):
        a, b = P + "flush:replica-a:nonce:j", P + "flush:replica-b:nonce:j"
        two = [line(inp=10, out=1, cc=0, cr=0), line(model="gpt-4o", inp=5, out=2, cc=0, cr=0)]
        self.append(two, 1, a)
        self.append([line(inp=3, out=0, cc=0, cr=0)], 1, b)  # another replica's first batch
        self.append(two, 1, a)  # written again after a lost reply
        self.flush([line(inp=1, out=1, cc=0, cr=0)])  # the script's lines come without a header
        self.append([line(inp=100, out=0, cc=0, cr=0)], 2, a)
        self.assertEqual(self.rc.cmd("LLEN", P + "u:journal"), 11)
        self.fold()
        hs, _ = self.hashes()
        self.assertEqual(hs["u:all"], totals("requests", 5, 119, 4, 0, 0))
        self.assertEqual((self.rc.cmd("GET", a), self.rc.cmd("GET", b)), ("2", "1"))
        # Copies that arrive after the fold are skipped too (rewrites go oldest first), and
        # the mark's expiry is renewed by every fold that meets it.
        self.rc.cmd("EXPIRE", a, 5)
        self.append(two, 1, a)
        self.append([line(inp=100, out=0, cc=0, cr=0)], 2, a)
        self.append([line(inp=1000, out=0, cc=0, cr=0)], 3, a)
        self.fold()
        hs, _ = self.hashes()
        self.assertEqual(hs["u:all"], totals("requests", 6, 1119, 4, 0, 0))
        self.assertEqual(self.rc.cmd("GET", a), "3")
        self.assertGreater(self.rc.cmd("TTL", a), 86000)

    def test_the_batch_that_fills_the_journal_folds_it(self):
        for i in range(FOLD_LINES - 1):
            self.flush([line(n=1, inp=1, out=1, cc=0, cr=0)])
        self.assertEqual(self.rc.cmd("LLEN", P + "u:journal"), FOLD_LINES - 1)
        self.assertIsNone(self.rc.cmd("HGET", P + "u:all", "requests"))
        self.flush([line(n=1, inp=1, out=1, cc=0, cr=0), line(model="other", n=1, inp=0, out=0, cc=0, cr=0)])
        self.assertEqual(self.rc.cmd("EXISTS", P + "u:journal"), 0)
        self.assertEqual(self.rc.cmd("HGET", P + "u:all", "requests"), str(FOLD_LINES + 1))
        self.assertEqual(self.rc.cmd("HGET", P + "u:kd:%s:%s" % (ID, DAY), "m:claude-x:requests"), str(FOLD_LINES))

    def test_settlements_in_a_batch_apply_at_once_and_a_batch_may_hold_only_them(self):
        base = P + "pl:" + ID + ":"
        self.rc.cmd("HSET", base + "adm", "a.1", "300 0")
        self.rc.cmd("ZADD", base + "live", 9999999999999, "a.1")
        self.rc.cmd("HSET", base + "r", "t", 300, "n", 0)
        self.assertEqual(self.flush([line()], [("p", base, "a.1", 150)]), 1)
        self.assertEqual(self.rc.cmd("EXISTS", base + "adm", base + "live", base + "r"), 0)
        self.assertEqual(self.rc.cmd("LLEN", P + "u:journal"), 1)
        self.assertEqual(self.flush([], [("p", base, "a.2", 0)]), 1)
        self.assertEqual(self.rc.cmd("LLEN", P + "u:journal"), 1)

    def test_malformed_lines_are_skipped_not_counted(self):
        # Replicas write only well-formed lines; a stray one must not stop the others.
        self.rc.cmd("RPUSH", P + "u:journal", "garbage", line(), "a\tb\tc")
        self.assertEqual(self.fold(), 3)
        self.assertEqual(self.rc.cmd("HGET", P + "u:all", "requests"), "1")
        # A header that cannot be read names no batch: the lines after it are counted.
        self.rc.cmd("RPUSH", P + "u:journal", "#", line(), "#x\tsoon\t1", line())
        self.fold()
        self.assertEqual(self.rc.cmd("HGET", P + "u:all", "requests"), "3")


if __name__ == "__main__":
    unittest.main()
