package eventlog_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// TestTopicIDChecksNameReadTopics: the topic-ID check a consumer makes before every batch
// asks the brokers about the topics the process reads, not every topic it created or
// checked at start-up. A polylith process ensures all fourteen topics and reads one to a
// few of them; asking about all of them, as before, made the brokers list 14 topics' 16
// partitions each, for every batch of every consumer process (issue 17).
func TestTopicIDChecksNameReadTopics(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := kafkaConfig(c.ListenAddrs(), 1)
	for i := range 10 {
		cfg.Topics = append(cfg.Topics, fmt.Sprintf("ensured-%d", i))
	}
	cfg.Topics = append(cfg.Topics, "read")
	k := newKafka(t, cfg)
	var mu sync.Mutex
	var requests [][]string
	watch := true
	c.ControlKey(kmsg.Metadata.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		var names []string
		for _, tp := range req.(*kmsg.MetadataRequest).Topics {
			if tp.Topic != nil {
				names = append(names, *tp.Topic)
			}
		}
		mu.Lock()
		if watch {
			requests = append(requests, names)
		}
		mu.Unlock()
		return nil, nil, false
	})
	const records = 5
	done := make(chan struct{})
	var got int
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		defer close(done)
		_ = k.Consume(cctx, "read", 0, 0, func(_ context.Context, recs []eventlog.Record) error { // ends with cctx
			got += len(recs)
			if got == records {
				stop()
			}
			return nil
		})
	}()
	for i := range records {
		// One at a time, each its own batch: every batch is checked.
		if _, err := k.Produce(ctx, "read", eventlog.Message{Key: []byte("room"), Value: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	<-done
	mu.Lock()
	watch = false
	defer mu.Unlock()
	if got != records {
		t.Fatalf("consumed %d records, want %d", got, records)
	}
	checks := 0
	for _, names := range requests {
		if len(names) == 1 && names[0] == "read" {
			checks++
			continue
		}
		t.Errorf("Metadata request for %v while consuming; want only the topic read", names)
	}
	if checks == 0 {
		t.Error("no topic-ID check seen: the test no longer watches what it means to")
	}
}
