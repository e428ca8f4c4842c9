package main

import (
	"testing"
	"time"
)

// TestReadyTimeoutFlag: --ready-timeout sets how long start waits for the components,
// 3 minutes by default, and must be positive.
func TestReadyTimeoutFlag(t *testing.T) {
	o, err := parse(nil)
	if err != nil || o.readyTimeout != 3*time.Minute {
		t.Fatalf("default: %v, %v", o.readyTimeout, err)
	}
	if o, err = parse([]string{"--ready-timeout", "5m30s"}); err != nil || o.readyTimeout != 330*time.Second {
		t.Fatalf("--ready-timeout 5m30s: %v, %v", o.readyTimeout, err)
	}
	for _, bad := range []string{"0s", "-1m", "soon"} {
		if _, err := parse([]string{"--ready-timeout", bad}); err == nil {
			t.Errorf("--ready-timeout %s accepted", bad)
		}
	}
}
