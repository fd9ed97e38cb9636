package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

type saramaScenario struct {
	addrs        []string
	topic, group string
	version      sarama.KafkaVersion
	client       sarama.Client
	admin        sarama.ClusterAdmin
	plan         []planEntry
}

func saramaConfig(v sarama.KafkaVersion) *sarama.Config {
	c := sarama.NewConfig()
	c.Version = v
	c.ClientID = "compat-sarama"
	c.Metadata.Retry.Max = 10
	c.Metadata.Retry.Backoff = 200 * time.Millisecond
	return c
}

func newSarama(bootstrap, topic, group string) (scenario, error) {
	vs := os.Getenv("SARAMA_VERSION")
	if vs == "" {
		vs = "3.9.0"
	}
	v, err := sarama.ParseKafkaVersion(vs)
	if err != nil {
		return nil, err
	}
	s := &saramaScenario{addrs: []string{bootstrap}, topic: topic, group: group, version: v}
	s.client, err = sarama.NewClient(s.addrs, saramaConfig(v))
	if err != nil {
		return nil, err
	}
	s.admin, err = sarama.NewClusterAdminFromClient(s.client)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *saramaScenario) close() { s.admin.Close() }

func (s *saramaScenario) create(ctx context.Context) (string, error) {
	r, m := retention, maxMessageBytes
	err := s.admin.CreateTopic(s.topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"retention.ms": &r, "max.message.bytes": &m}}, false)
	if err != nil {
		return "", err
	}
	deadline := time.Now().Add(stepTimeout)
	for n := 0; n < 100 && time.Now().Before(deadline); n++ {
		if err := s.client.RefreshMetadata(s.topic); err == nil {
			if ps, err := s.client.Partitions(s.topic); err == nil && len(ps) == partitions {
				return fmt.Sprintf("%d partitions, retention.ms=%s max.message.bytes=%s (sarama Version %s)", partitions, r, m, s.version), nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", fmt.Errorf("topic %s not in metadata with %d partitions", s.topic, partitions)
}

func (s *saramaScenario) produce(ctx context.Context) (string, error) {
	s.plan = split(codecs)
	for _, e := range s.plan {
		c := saramaConfig(s.version)
		c.Producer.Idempotent = true
		c.Producer.RequiredAcks = sarama.WaitForAll
		c.Producer.Return.Successes = true
		c.Producer.Retry.Max = 5
		c.Net.MaxOpenRequests = 1
		switch e.codec {
		case "gzip":
			c.Producer.Compression = sarama.CompressionGZIP
		case "snappy":
			c.Producer.Compression = sarama.CompressionSnappy
		case "lz4":
			c.Producer.Compression = sarama.CompressionLZ4
		case "zstd":
			c.Producer.Compression = sarama.CompressionZSTD
		}
		p, err := sarama.NewSyncProducer(s.addrs, c)
		if err != nil {
			return "", fmt.Errorf("%s: %w", e.codec, err)
		}
		var msgs []*sarama.ProducerMessage
		for _, i := range e.ids {
			msgs = append(msgs, &sarama.ProducerMessage{Topic: s.topic, Key: sarama.StringEncoder(fmt.Sprintf("k%d", i)),
				Value: sarama.StringEncoder(valueOf(i, e.codec))})
		}
		err = p.SendMessages(msgs)
		p.Close()
		if err != nil {
			if pe, ok := err.(sarama.ProducerErrors); ok && len(pe) > 0 {
				return "", fmt.Errorf("%s: %d errors, first: %v", e.codec, len(pe), pe[0].Err)
			}
			return "", fmt.Errorf("%s: %w", e.codec, err)
		}
	}
	return fmt.Sprintf("%d msgs idempotent acks=all codecs=gzip,snappy,lz4,zstd", total), nil
}

type handler struct {
	mu     sync.Mutex
	got    map[int]string
	err    error
	cancel context.CancelFunc
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		h.mu.Lock()
		if err := record(h.got, m.Key, m.Value); err != nil && h.err == nil {
			h.err = err
		}
		n := len(h.got)
		h.mu.Unlock()
		sess.MarkMessage(m, "")
		if n >= total {
			sess.Commit()
			h.cancel()
		}
	}
	return nil
}

func (s *saramaScenario) consume(ctx context.Context) (string, error) {
	c := saramaConfig(s.version)
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Enable = false
	c.Consumer.Return.Errors = true
	g, err := sarama.NewConsumerGroup(s.addrs, s.group, c)
	if err != nil {
		return "", err
	}
	cctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	h := &handler{got: map[int]string{}, cancel: cancel}
	var gerrs []error
	errsDone := make(chan struct{})
	go func() {
		defer close(errsDone)
		for e := range g.Errors() {
			gerrs = append(gerrs, e)
		}
	}()
	for n := 0; n < 20 && cctx.Err() == nil; n++ {
		if err := g.Consume(cctx, []string{s.topic}, h); err != nil {
			g.Close()
			return "", fmt.Errorf("consume: %w", err)
		}
	}
	g.Close()
	select {
	case <-errsDone:
	case <-time.After(5 * time.Second):
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return "", h.err
	}
	if err := checkConsumed(h.got, s.plan); err != nil {
		if len(gerrs) > 0 {
			return "", fmt.Errorf("%v (consumer group errors: %v)", err, gerrs[0])
		}
		return "", err
	}
	resp, err := s.admin.ListConsumerGroupOffsets(s.group, map[string][]int32{s.topic: {0, 1, 2}})
	if err != nil {
		return "", fmt.Errorf("fetch committed offsets: %w", err)
	}
	sum := int64(0)
	for p := int32(0); p < partitions; p++ {
		if b := resp.GetBlock(s.topic, p); b != nil && b.Offset > 0 {
			sum += b.Offset
		}
	}
	if sum != total {
		return "", fmt.Errorf("committed offsets sum to %d, want %d", sum, total)
	}
	return fmt.Sprintf("%d msgs checked, group %s committed %d", len(h.got), s.group, total), nil
}

func (s *saramaScenario) describe() (map[string]string, error) {
	entries, err := s.admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: s.topic})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, e := range entries {
		out[e.Name] = e.Value
	}
	return out, nil
}

func (s *saramaScenario) configs(ctx context.Context) (string, error) {
	cfg, err := s.describe()
	if err != nil {
		return "", err
	}
	if cfg["retention.ms"] != retention || cfg["max.message.bytes"] != maxMessageBytes {
		return "", fmt.Errorf("describe: retention.ms=%q max.message.bytes=%q", cfg["retention.ms"], cfg["max.message.bytes"])
	}
	v := alteredRetention
	if err := s.admin.IncrementalAlterConfig(sarama.TopicResource, s.topic, map[string]sarama.IncrementalAlterConfigsEntry{
		"retention.ms": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &v}}, false); err != nil {
		return "", fmt.Errorf("incremental alter: %w", err)
	}
	cfg, err = s.describe()
	if err != nil {
		return "", err
	}
	if cfg["retention.ms"] != alteredRetention || cfg["max.message.bytes"] != maxMessageBytes {
		return "", fmt.Errorf("after incremental alter: retention.ms=%q max.message.bytes=%q", cfg["retention.ms"], cfg["max.message.bytes"])
	}
	return "retention.ms=3600000 described; incremental SET retention.ms=" + alteredRetention + " described", nil
}

func (s *saramaScenario) deleteRecords(ctx context.Context) (string, error) {
	hw, err := s.client.GetOffset(s.topic, 0, sarama.OffsetNewest)
	if err != nil {
		return "", err
	}
	if hw < 2 {
		return "", fmt.Errorf("partition 0 high watermark %d, need >= 2", hw)
	}
	target := hw / 2
	if err := s.admin.DeleteRecords(s.topic, map[int32]int64{0: target}); err != nil {
		return "", err
	}
	low, err := s.client.GetOffset(s.topic, 0, sarama.OffsetOldest)
	if err != nil {
		return "", err
	}
	if low != target {
		return "", fmt.Errorf("after DeleteRecords(%d): ListOffsets earliest %d", target, low)
	}
	return fmt.Sprintf("p0 deleted below %d (hw %d); ListOffsets earliest=%d", target, hw, low), nil
}

func (s *saramaScenario) deleteTopic(ctx context.Context) (string, error) {
	if err := s.admin.DeleteTopic(s.topic); err != nil {
		return "", err
	}
	deadline := time.Now().Add(stepTimeout)
	for n := 0; n < 100 && time.Now().Before(deadline); n++ {
		ts, err := s.admin.ListTopics()
		if err == nil {
			if _, ok := ts[s.topic]; !ok {
				return "gone from ListTopics", nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", fmt.Errorf("%s still listed after delete", s.topic)
}
