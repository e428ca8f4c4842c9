package eventlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// errReopen is deliver's answer when the records it holds may come from another topic of
// the same name than the one the partition consumer was opened on.
var errReopen = errors.New("topic changed under the partition consumer")

// topicIDs is the brokers' latest answer about which incarnation of each topic they
// serve: Kafka gives every created topic a new ID, so a topic deleted and created again
// (by a producer, after a broker restart without its data) is told apart from the one a
// consumer was reading although the partition and offsets look alike.
type topicIDs struct {
	asked time.Time
	ids   map[string]sarama.Uuid
	errs  map[string]error
}

// topicID is topic's ID in an answer the brokers gave to a request sent after after. The
// zero ID means brokers too old to have topic IDs. Concurrent callers share requests: one
// request asks for every topic whose ID this process asked for so far (the topics it
// reads, not every topic it produces to or created: every consumer asks once per batch, and
// the brokers' answer lists each topic's partitions), on a connection of its own (the
// producer's and the fetches' connections would make it wait).
func (k *Kafka) topicID(ctx context.Context, topic string, after time.Time) (sarama.Uuid, error) {
	// idLock is held during the request: callers queue, and reuse an answer newer than theirs.
	select {
	case k.idLock <- struct{}{}:
	case <-ctx.Done():
		return sarama.Uuid{}, ctx.Err()
	}
	defer func() { <-k.idLock }()
	last := k.ids
	if last.asked.After(after) {
		if id, ok := last.ids[topic]; ok {
			return id, nil
		}
		if err, ok := last.errs[topic]; ok {
			return sarama.Uuid{}, err
		}
	}
	k.identified[topic] = true
	topics := []string{topic}
	for t := range k.identified {
		if t != topic {
			topics = append(topics, t)
		}
	}
	asked := time.Now()
	broker := k.metaClient.LeastLoadedBroker()
	if broker == nil {
		return sarama.Uuid{}, ErrClosed
	}
	res, err := broker.GetMetadata(sarama.NewMetadataRequest(k.version, topics))
	if err != nil {
		_ = broker.Close() // a failed connection is reopened by the next request
		return sarama.Uuid{}, fmt.Errorf("topic ids: %w", err)
	}
	answer := topicIDs{asked: asked, ids: map[string]sarama.Uuid{}, errs: map[string]error{}}
	for _, tm := range res.Topics {
		if tm.Err != sarama.ErrNoError {
			answer.errs[tm.Name] = tm.Err
			continue
		}
		answer.ids[tm.Name] = tm.Uuid
	}
	k.ids = answer
	if id, ok := answer.ids[topic]; ok {
		return id, nil
	}
	if err, ok := answer.errs[topic]; ok {
		return sarama.Uuid{}, err
	}
	return sarama.Uuid{}, fmt.Errorf("topic ids: no answer for %s", topic)
}

// sameTopic reports whether records received at received come from the topic incarnation
// id, retrying transient failures with backoff until ctx ends. A topic the brokers do
// not know (any more) is not the same.
func (k *Kafka) sameTopic(ctx context.Context, topic string, id sarama.Uuid, received time.Time) (bool, error) {
	if id == (sarama.Uuid{}) {
		return true, nil
	}
	b := newBackoff()
	for {
		cur, err := k.topicID(ctx, topic, received)
		if err == nil {
			return cur == id || cur == (sarama.Uuid{}), nil
		}
		if isUnknownTopic(err) {
			return false, nil
		}
		k.log.WithError(err).WithField("topic", topic).Warn("kafka topic id not known; retrying")
		if werr := b.wait(ctx); werr != nil {
			return false, werr
		}
	}
}

// Incarnation implements Log: the topic's ID, which Kafka assigns anew each time the topic
// is created; "" from brokers too old to have topic IDs.
func (k *Kafka) Incarnation(ctx context.Context, topic string, _ int32) (string, error) {
	if !k.enter() {
		return "", ErrClosed
	}
	defer k.running.Done()
	id, err := k.topicID(ctx, topic, time.Now())
	if err != nil {
		return "", err
	}
	if id == (sarama.Uuid{}) {
		return "", nil
	}
	return id.String(), nil
}
