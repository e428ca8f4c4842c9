package eventlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
)

// ErrOffsetPastEnd is what Ready reports while a consumer's offset is past the end of its
// partition: the topic was recreated or truncated, or the log lost records. Such a
// partition is stopped, never skipped ahead: the records now below the consumer's offset
// were never delivered to it.
var ErrOffsetPastEnd = errors.New("consumer offset past the end of its partition")

// ErrRecovering is what Ready reports while a Guard recovers a consumer whose log was
// wiped under it: its data is behind the owner's until the recovery ends.
var ErrRecovering = errors.New("consumer recovering from the owner after its log was wiped")

// ErrStuck is what Ready reports while a Consumer retries a record it failed to apply:
// the partition waits behind it until it is applied or dead-lettered (or, for an error
// marked Retry, until what it waits for answers again).
var ErrStuck = errors.New("consumer retrying a record it failed to apply")

// recoveryMarker is implemented by the logs whose Ready reports recovering and stuck
// consumers (Embedded, Kafka): recovering and retrying count topic/partition as recovering
// (ErrRecovering) or stuck (ErrStuck) until the returned function is called.
type recoveryMarker interface {
	recovering(topic string, partition int32) (done func())
	retrying(topic string, partition int32) (done func())
}

// stalls are the partitions whose consumers stopped at an offset past the partition's end.
type stalls struct {
	mu   sync.Mutex
	held map[partKey]int
	// recov are the partitions a Guard is recovering (see ErrRecovering).
	recov map[partKey]int
	// stuck are the partitions a Consumer retries a record of (see ErrStuck).
	stuck   map[partKey]int
	metrics *Metrics
	log     *logrus.Entry
}

func newStalls(cfg *Config) *stalls {
	return &stalls{held: map[partKey]int{}, recov: map[partKey]int{}, stuck: map[partKey]int{}, metrics: cfg.Metrics, log: cfg.Logger}
}

// hold stops a consumer of topic/partition whose next offset from is past the partition's
// end end: it logs an error, counts the partition in the metric and in Ready until ctx
// ends or closed is closed, and returns ctx's error or ErrClosed.
func (s *stalls) hold(ctx context.Context, closed <-chan struct{}, topic string, partition int32, from, end int64) error {
	k := partKey{topic, partition}
	s.log.WithFields(logrus.Fields{"topic": topic, "partition": partition, "offset": from, "end": end}).
		Error("consumer offset past the end of the partition (topic recreated or records lost): partition stopped, nothing skipped")
	s.mu.Lock()
	s.held[k]++
	s.mu.Unlock()
	s.metrics.stopped(topic, partition, 1)
	defer func() {
		s.mu.Lock()
		if s.held[k]--; s.held[k] == 0 {
			delete(s.held, k)
		}
		s.mu.Unlock()
		s.metrics.stopped(topic, partition, -1)
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-closed:
		return ErrClosed
	}
}

// recovering counts topic/partition as recovering until done is called.
func (s *stalls) recovering(topic string, partition int32) (done func()) {
	return s.count(s.recov, topic, partition)
}

// retrying counts topic/partition as stuck until done is called.
func (s *stalls) retrying(topic string, partition int32) (done func()) {
	return s.count(s.stuck, topic, partition)
}

// count counts topic/partition in m until done is called.
func (s *stalls) count(m map[partKey]int, topic string, partition int32) (done func()) {
	k := partKey{topic, partition}
	s.mu.Lock()
	m[k]++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if m[k]--; m[k] == 0 {
			delete(m, k)
		}
		s.mu.Unlock()
	}
}

// err names every stopped partition (ErrOffsetPastEnd), else every recovering one
// (ErrRecovering), else every stuck one (ErrStuck), or is nil when there is none.
func (s *stalls) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.held) > 0 {
		return fmt.Errorf("%w: %s", ErrOffsetPastEnd, partNames(s.held))
	}
	if len(s.recov) > 0 {
		return fmt.Errorf("%w: %s", ErrRecovering, partNames(s.recov))
	}
	if len(s.stuck) > 0 {
		return fmt.Errorf("%w: %s", ErrStuck, partNames(s.stuck))
	}
	return nil
}

// partNames lists the partitions of m as topic/partition, sorted.
func partNames(m map[partKey]int) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, fmt.Sprintf("%s/%d", k.topic, k.partition))
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}
