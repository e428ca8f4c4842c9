package internal

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
)

// TestRuleCacheStaysWithinItsBytes: the rulesets of 20,000 users do not take the cache
// past its budget, what it keeps is answered from it, a changed stored content is not,
// and its size is reported as the pushserver_rules cache.
func TestRuleCacheStaysWithinItsBytes(t *testing.T) {
	const budget = 256 << 10
	reg := prometheus.NewRegistry()
	c := NewRuleCache(budget, reg)
	logger := logrus.NewEntry(logrus.New())
	for i := range 20000 {
		c.Get(fmt.Sprintf("@user%06d:example.org", i), nil, logger)
		if b := c.rules.Bytes(); b > budget {
			t.Fatalf("after %d users the cache holds %d bytes, over its %d", i+1, b, budget)
		}
	}
	if kept := c.rules.Len(); kept < 100 {
		t.Fatalf("the cache keeps %d users' rulesets in %d bytes", kept, budget)
	}
	rs := c.Get("@user019999:example.org", nil, logger)
	if again := c.Get("@user019999:example.org", nil, logger); again != rs {
		t.Fatal("a user's ruleset was parsed again with the same stored content")
	}
	stored := json.RawMessage(`{"global":{"override":[{"rule_id":".m.rule.master","default":true,"enabled":true,"actions":[]}]}}`)
	changed := c.Get("@user019999:example.org", stored, logger)
	if changed == rs || !changed.Find("override", ".m.rule.master").Enabled {
		t.Fatal("the ruleset of changed stored content came from the cache")
	}
	n, err := testutil.GatherAndCount(reg, "dendrite_cache_bytes", "dendrite_cache_evictions_total")
	if err != nil || n != 2 {
		t.Fatalf("metrics: %d series, %v", n, err)
	}
	out, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var labelled bool
	for _, mf := range out {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				labelled = labelled || l.GetValue() == "pushserver_rules" && strings.HasPrefix(mf.GetName(), "dendrite_cache_")
			}
		}
	}
	if !labelled {
		t.Fatal("no dendrite_cache_* series for the pushserver_rules cache")
	}
}
