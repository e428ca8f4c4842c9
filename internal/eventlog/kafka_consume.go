package eventlog

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/sirupsen/logrus"
)

// Consume implements Log. It reads the partition with a sarama partition consumer from
// from, hands handle what is immediately available (up to batchSize records) and offers a
// failed batch again after a backoff. Broker outages are retried with backoff. If from is
// before the oldest kept record (retention), it starts at the oldest and logs a warning.
// If it is past the end, or the brokers answer that it is out of range while records
// before it are kept (the topic was recreated, or the brokers lost records), the partition
// stops: nothing more is delivered, an error is logged, the stopped-consumers metric counts
// it and Ready reports ErrOffsetPastEnd until ctx ends. It returns ctx.Err() when ctx ends
// and ErrClosed once the log is closed.
func (k *Kafka) Consume(ctx context.Context, topic string, partition int32, from int64, handle func(ctx context.Context, recs []Record) error) error {
	if !k.enter() {
		return ErrClosed
	}
	defer k.running.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(k.closing, cancel)
	defer stop()
	err := k.consume(ctx, topic, partition, from, handle)
	if k.closing.Err() != nil {
		return ErrClosed
	}
	return err
}

func (k *Kafka) consume(ctx context.Context, topic string, partition int32, next int64, handle func(ctx context.Context, recs []Record) error) error {
	log := k.log.WithFields(logrus.Fields{"topic": topic, "partition": partition})
	b := newBackoff()
	var outOfRange atomic.Bool
	var id sarama.Uuid // the topic incarnation read so far (zero before the first open)
	for {
		pc, cur, err := k.openPartition(ctx, log, topic, partition, next, reopen{id: id, outOfRange: outOfRange.Load()})
		var past pastEnd
		if errors.As(err, &past) {
			return k.stalls.hold(ctx, k.closing.Done(), topic, partition, next, past.end)
		}
		if err != nil {
			return err
		}
		outOfRange.Store(false)
		id = cur
		var errs = make(chan struct{})
		go func() {
			defer close(errs)
			for cerr := range pc.Errors() {
				if errors.Is(cerr.Err, sarama.ErrOffsetOutOfRange) {
					outOfRange.Store(true)
				}
				if isUnknownTopic(cerr.Err) {
					k.recreate(topic)
				}
				log.WithError(cerr.Err).Warn("kafka partition consumer error")
			}
		}()
		next, err = k.deliver(ctx, pc, id, next, handle)
		reopened := errors.Is(err, errReopen)
		if reopened {
			err = nil
		}
		release := func() {
			pc.AsyncClose()
			for range pc.Messages() { // drain so the partition consumer can finish
			}
			<-errs
		}
		if err != nil {
			// Do not make the caller wait for the fetch in flight; Close waits for it.
			k.running.Add(1)
			go func() {
				defer k.running.Done()
				release()
			}()
			return err
		}
		release()
		if reopened {
			log.WithField("offset", next).Warn("kafka topic deleted or recreated under the consumer; reopening")
			continue
		}
		// The partition consumer gave up (offset out of range, retries exhausted): reopen.
		log.WithField("offset", next).Warn("kafka partition consumer stopped; reopening")
		if err := b.wait(ctx); err != nil {
			return err
		}
	}
}

// pastEnd is openPartition's answer for a partition that must stop: records below next
// are missing or were never delivered.
type pastEnd struct{ end int64 }

func (p pastEnd) Error() string { return fmt.Sprintf("offset past the end %d", p.end) }

// reopen is what a consumer knew when its partition consumer stopped: the topic ID it
// read (zero at the first open) and whether the brokers said its offset was out of range.
type reopen struct {
	id         sarama.Uuid
	outOfRange bool
}

// openPartition starts a partition consumer at next (or the oldest kept record if next
// was trimmed), retrying transient failures until ctx ends, and returns it with the topic
// ID it reads. A partition is normally read through the shared sarama consumer; a second
// concurrent reader of the same partition goes through an extra consumer (extraConsumer),
// closed with the log. It returns a pastEnd error when next is past the end, or when
// records before next are kept but were never delivered: the brokers said next was out of
// range, or the topic is another one than before (deleted and created again).
func (k *Kafka) openPartition(ctx context.Context, log *logrus.Entry, topic string, partition int32, next int64, was reopen) (sarama.PartitionConsumer, sarama.Uuid, error) {
	b := newBackoff()
	for {
		if err := ctx.Err(); err != nil {
			return nil, sarama.Uuid{}, err
		}
		n, err := k.ensureTopic(ctx, topic)
		if err == nil && (partition < 0 || partition >= n) {
			return nil, sarama.Uuid{}, fmt.Errorf("consume %s/%d: topic has %d partitions", topic, partition, n)
		}
		var id sarama.Uuid
		if err == nil {
			id, err = k.topicID(ctx, topic, time.Now())
		}
		var start int64
		if err == nil {
			changed := was.id != (sarama.Uuid{}) && id != (sarama.Uuid{}) && id != was.id
			start, err = k.startOffset(log, topic, partition, next, was.outOfRange || changed)
		}
		if err == nil {
			var pc sarama.PartitionConsumer
			pc, err = k.consumer.ConsumePartition(topic, partition, start)
			if err == nil {
				return pc, id, nil
			}
			var cerr sarama.ConfigurationError
			if errors.As(err, &cerr) {
				pc, perr := k.extraConsumer(topic, partition, start)
				if perr == nil {
					return pc, id, nil
				}
				err = perr
			}
		}
		var past pastEnd
		if errors.Is(err, ErrPartitionMismatch) || errors.As(err, &past) {
			return nil, sarama.Uuid{}, err
		}
		if isUnknownTopic(err) {
			k.forget(topic) // the next attempt creates it again
		}
		log.WithError(err).Warn("kafka partition consumer not started; retrying")
		if err := b.wait(ctx); err != nil {
			return nil, sarama.Uuid{}, err
		}
	}
}

// startOffset is where to start reading to deliver records from next on, or a pastEnd
// error (see openPartition); suspect says records before next may never have been
// delivered.
func (k *Kafka) startOffset(log *logrus.Entry, topic string, partition int32, next int64, suspect bool) (int64, error) {
	oldest, err := k.client.GetOffset(topic, partition, sarama.OffsetOldest)
	if err != nil {
		return 0, err
	}
	end, err := k.client.GetOffset(topic, partition, sarama.OffsetNewest)
	if err != nil {
		return 0, err
	}
	switch {
	case next < oldest:
		log.WithFields(logrus.Fields{"offset": next, "oldest": oldest}).Warn("kafka records before the oldest kept one were deleted; starting at the oldest")
		return oldest, nil
	case next > end || (suspect && next > oldest):
		return 0, pastEnd{end: end}
	}
	return next, nil
}

// extraReader is an extra consumer (extraConsumer) with the client it fetches through.
type extraReader struct {
	client   sarama.Client
	consumer sarama.Consumer
}

// extraConsumer reads a partition that the shared consumer already reads (another
// component of the same process reads the topic too). The i-th concurrent reader of any
// partition goes through the i-th extra sarama consumer, so each consumer still fetches
// all its partitions with one long-poll per broker: a consumer per reader and partition
// would each hold a long-poll. Each extra consumer fetches on a client (connection) of its
// own: on a shared connection (one request in flight) its fetches would wait behind the
// others' long-polls, up to fetchWait each.
func (k *Kafka) extraConsumer(topic string, partition int32, start int64) (sarama.PartitionConsumer, error) {
	for i := 0; ; i++ {
		k.extraMu.Lock()
		if i == len(k.extra) {
			client, err := sarama.NewClient(k.cfg.Brokers, k.sc)
			if err != nil {
				k.extraMu.Unlock()
				return nil, err
			}
			c, err := sarama.NewConsumerFromClient(client)
			if err != nil {
				_ = client.Close() // it served nothing
				k.extraMu.Unlock()
				return nil, err
			}
			k.extra = append(k.extra, extraReader{client: client, consumer: c})
		}
		c := k.extra[i].consumer
		k.extraMu.Unlock()
		pc, err := c.ConsumePartition(topic, partition, start)
		var cerr sarama.ConfigurationError
		if errors.As(err, &cerr) {
			continue // this one reads the partition too: try the next
		}
		return pc, err
	}
}

// deliver hands the partition consumer's records at or after next to handle until ctx ends
// (returning its error), the partition consumer stops (returning nil) or the records may
// come from another topic than id (returning errReopen, before handing them over). It
// returns the offset after the last handled record.
func (k *Kafka) deliver(ctx context.Context, pc sarama.PartitionConsumer, id sarama.Uuid, next int64, handle func(ctx context.Context, recs []Record) error) (int64, error) {
	b := newBackoff()
	for {
		var batch []Record
		select {
		case m, ok := <-pc.Messages():
			if !ok {
				return next, nil
			}
			batch = appendRecord(batch, m, next)
		case <-ctx.Done():
			return next, ctx.Err()
		}
	gather:
		for len(batch) < batchSize {
			select {
			case m, ok := <-pc.Messages():
				if !ok {
					break gather
				}
				batch = appendRecord(batch, m, next)
			default:
				break gather
			}
		}
		if len(batch) == 0 {
			continue
		}
		// Every record of the batch has arrived by now; a record gathered after the
		// first may have come with a later fetch than the first, so the time the first
		// arrived would let an answer older than it prove it.
		received := time.Now()
		// A topic deleted and created again under a running partition consumer is read
		// on at the old offset without any error: check, after the records arrived, that
		// they come from the topic the consumer opened.
		same, err := k.sameTopic(ctx, batch[0].Topic, id, received)
		if err != nil {
			return next, err
		}
		if !same {
			return next, errReopen
		}
		for {
			err := handle(ctx, batch)
			if err == nil {
				break
			}
			if err := b.wait(ctx); err != nil {
				return next, err
			}
		}
		b.reset()
		next = batch[len(batch)-1].Offset + 1
	}
}

// appendRecord appends m unless it is before next.
func appendRecord(batch []Record, m *sarama.ConsumerMessage, next int64) []Record {
	if m.Offset < next {
		return batch
	}
	return append(batch, Record{
		Topic: m.Topic, Partition: m.Partition, Offset: m.Offset,
		Key: m.Key, Value: m.Value, Timestamp: m.Timestamp,
	})
}
