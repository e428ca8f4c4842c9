package pushrules

import (
	"encoding/json"
	"fmt"
	"regexp"
	"runtime"
	"testing"
)

// heapBytes is the heap's live bytes after a full collection.
func heapBytes() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestLoadSharedIsLoad: LoadShared's ruleset is Load's, for a user without stored rules,
// one who changed default rules (which must not change another user's) and one with
// rules of their own.
func TestLoadSharedIsLoad(t *testing.T) {
	stored := map[string]string{
		"@alice:x": ``,
		"@bob:y":   `{"global":{"override":[{"rule_id":".m.rule.master","default":true,"enabled":true,"actions":[]}],"underride":[{"rule_id":".m.rule.message","default":true,"enabled":true,"actions":["notify",{"set_tweak":"sound","value":"bing"}]}]}}`,
		"@carol:z": `{"global":{"content":[{"rule_id":"lunch","default":false,"enabled":true,"pattern":"lunch*","actions":["notify"]}],"room":[{"rule_id":"!r:z","default":false,"enabled":true,"actions":[]}]}}`,
		"@<&>:x":   ``,
	}
	for _, u := range []string{"@alice:x", "@bob:y", "@carol:z", "@<&>:x", "@alice:x"} {
		want, err := Load(u, json.RawMessage(stored[u]))
		if err != nil {
			t.Fatal(err)
		}
		got, err := LoadShared(u, json.RawMessage(stored[u]))
		if err != nil {
			t.Fatal(err)
		}
		w, _ := want.Marshal()
		g, _ := got.Marshal()
		if string(g) != string(w) {
			t.Fatalf("%s: LoadShared gives\n%s\nLoad gives\n%s", u, g, w)
		}
	}
}

// TestSharedRulesetsAreSmall: 2,000 users' rulesets from LoadShared take a few hundred
// bytes each (Load's take about 6.7 KiB), and OwnBytes, the push reader's cache weight,
// estimates them within 25% below and 50% above what they take.
func TestSharedRulesetsAreSmall(t *testing.T) {
	const users = 2000
	if _, err := LoadShared("@warm:x", nil); err != nil {
		t.Fatal(err)
	}
	keep := make([]*Ruleset, users)
	before := heapBytes()
	for i := range keep {
		var err error
		if keep[i], err = LoadShared(fmt.Sprintf("@user%06d:soak.test", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	each := (heapBytes() - before) / users
	estimate := 0
	for _, rs := range keep {
		estimate += rs.OwnBytes()
	}
	estimate /= users
	runtime.KeepAlive(keep)
	t.Logf("a shared ruleset takes %d bytes, estimated %d", each, estimate)
	if each > 1500 {
		t.Fatalf("a shared ruleset takes %d bytes", each)
	}
	if float64(estimate) < 0.75*float64(each) || float64(estimate) > 1.5*float64(each) {
		t.Fatalf("OwnBytes estimates %d bytes for %d", estimate, each)
	}
}

// TestRegexpBytesEstimate: regexpBytes, the weight of a compiled glob in the Evaluator's
// cache, is within 30% below and 50% above what compiled globs take.
func TestRegexpBytesEstimate(t *testing.T) {
	const n = 1000
	for _, c := range []struct {
		pattern string
		words   bool
	}{{"m.room.*%d", false}, {"lunch*%d?", true}, {"*@*%d:example.org*", false}} {
		res := make([]*regexp.Regexp, n)
		before := heapBytes()
		for i := range res {
			res[i] = compileGlob(fmt.Sprintf(c.pattern, i), c.words)
		}
		each := (heapBytes() - before) / n
		est := regexpBytes(len(fmt.Sprintf(c.pattern, n/2)), c.words)
		runtime.KeepAlive(res)
		t.Logf("%q: %d bytes, estimated %d", c.pattern, each, est)
		if float64(est) < 0.7*float64(each) || float64(est) > 1.5*float64(each) {
			t.Errorf("%q: compiled glob takes %d bytes, estimated %d", c.pattern, each, est)
		}
	}
}

// TestEvaluatorCachesStayWithinBudget: many users' rules with wildcard patterns do not
// take the Evaluator's caches past their bytes.
func TestEvaluatorCachesStayWithinBudget(t *testing.T) {
	const budget = 64 << 10
	e := NewEvaluator(budget, nil)
	ev := map[string]any{"type": "m.room.message", "content": map[string]any{"body": "hello"}}
	for i := range 2000 {
		p := fmt.Sprintf("hel*%d", i)
		e.globMatches(p, true, "hello")
		e.lookup(ev, fmt.Sprintf("content.key%d", i))
		if b := e.globs.Bytes() + e.paths.Bytes(); b > budget {
			t.Fatalf("after %d patterns the caches hold %d bytes", i+1, b)
		}
	}
}

// TestLiteralMatchesLikeRegexp: a pattern without wildcards, matched as text, matches what
// its compiled regexp does, case folding and word boundaries included.
func TestLiteralMatchesLikeRegexp(t *testing.T) {
	patterns := []string{"alice", "Alice", "@room", "m.room.message", "", "straße", "ΣΑΣ", "k", "s", "a b", "é", "x.y"}
	values := []string{"", "alice", "ALICE", "malice", "alice!", "hi alice, hi", "hi_alice", "@room", "x@room", "a@roomb",
		"m.room.message", "M.ROOM.MESSAGE", "m.room.messages", "STRASSE", "STRAßE", "σας", "ςας", "\u212a", "K", "a b", "a  b",
		"é!", "É", "xzy", "x.y", "\xffalice", "alice\xff", "éalice", "aliceé", "\u212aalice", "alice\u017f", "ſ"}
	for _, p := range patterns {
		for _, words := range []bool{false, true} {
			re := compileGlob(p, words)
			for _, v := range values {
				if got, want := literalMatches(p, words, v), re.MatchString(v); got != want {
					t.Errorf("pattern %q words %v value %q: literal %v, regexp %v", p, words, v, got, want)
				}
			}
		}
	}
}
