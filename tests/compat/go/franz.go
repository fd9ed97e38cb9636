package main

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type franz struct {
	seeds        []string
	topic, group string
	cl           *kgo.Client
	adm          *kadm.Client
	plan         []planEntry
}

func newFranz(bootstrap, topic, group string) (scenario, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		return nil, err
	}
	return &franz{seeds: []string{bootstrap}, topic: topic, group: group, cl: cl, adm: kadm.NewClient(cl)}, nil
}

func (f *franz) close() { f.cl.Close() }

func (f *franz) create(ctx context.Context) (string, error) {
	r, m := retention, maxMessageBytes
	resp, err := f.adm.CreateTopics(ctx, partitions, 1,
		map[string]*string{"retention.ms": &r, "max.message.bytes": &m}, f.topic)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return "", err
	}
	deadline := time.Now().Add(stepTimeout)
	for n := 0; n < 100 && time.Now().Before(deadline); n++ {
		td, err := f.adm.ListTopics(ctx, f.topic)
		if err == nil && td.Has(f.topic) && td[f.topic].Err == nil && len(td[f.topic].Partitions) == partitions {
			return fmt.Sprintf("%d partitions, retention.ms=%s max.message.bytes=%s", partitions, r, m), nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", fmt.Errorf("topic %s not in metadata with %d partitions", f.topic, partitions)
}

func (f *franz) produce(ctx context.Context) (string, error) {
	f.plan = split(codecs)
	for _, e := range f.plan {
		var codec kgo.CompressionCodec
		switch e.codec {
		case "gzip":
			codec = kgo.GzipCompression()
		case "snappy":
			codec = kgo.SnappyCompression()
		case "lz4":
			codec = kgo.Lz4Compression()
		case "zstd":
			codec = kgo.ZstdCompression()
		}
		// Idempotence is on by default in franz-go (acks=all).
		p, err := kgo.NewClient(kgo.SeedBrokers(f.seeds...), kgo.ProducerBatchCompression(codec),
			kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(20*time.Millisecond))
		if err != nil {
			return "", err
		}
		var recs []*kgo.Record
		for _, i := range e.ids {
			recs = append(recs, &kgo.Record{Topic: f.topic, Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(valueOf(i, e.codec))})
		}
		err = p.ProduceSync(ctx, recs...).FirstErr()
		p.Close()
		if err != nil {
			return "", fmt.Errorf("%s: %w", e.codec, err)
		}
	}
	return fmt.Sprintf("%d msgs idempotent acks=all codecs=gzip,snappy,lz4,zstd", total), nil
}

func (f *franz) consume(ctx context.Context) (string, error) {
	c, err := kgo.NewClient(kgo.SeedBrokers(f.seeds...), kgo.ConsumerGroup(f.group), kgo.ConsumeTopics(f.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	if err != nil {
		return "", err
	}
	defer c.Close()
	got := map[int]string{}
	deadline := time.Now().Add(stepTimeout)
	for n := 0; n < 1000 && len(got) < total && time.Now().Before(deadline); n++ {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := c.PollFetches(pctx)
		cancel()
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if err != context.DeadlineExceeded && ferr == nil {
				ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return "", ferr
		}
		var rerr error
		fs.EachRecord(func(r *kgo.Record) {
			if err := record(got, r.Key, r.Value); err != nil && rerr == nil {
				rerr = err
			}
		})
		if rerr != nil {
			return "", rerr
		}
	}
	if err := checkConsumed(got, f.plan); err != nil {
		return "", err
	}
	if err := c.CommitUncommittedOffsets(ctx); err != nil {
		return "", fmt.Errorf("commit: %w", err)
	}
	offs, err := f.adm.FetchOffsets(ctx, f.group)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		return "", fmt.Errorf("fetch committed offsets: %w", err)
	}
	sum := int64(0)
	for p := int32(0); p < partitions; p++ {
		if o, ok := offs.Lookup(f.topic, p); ok {
			sum += o.At
		}
	}
	if sum != total {
		return "", fmt.Errorf("committed offsets sum to %d, want %d", sum, total)
	}
	return fmt.Sprintf("%d msgs checked, group %s committed %d", len(got), f.group, total), nil
}

func (f *franz) describe(ctx context.Context) (map[string]string, error) {
	rcs, err := f.adm.DescribeTopicConfigs(ctx, f.topic)
	if err != nil {
		return nil, err
	}
	rc, err := rcs.On(f.topic, nil)
	if err != nil {
		return nil, err
	}
	if rc.Err != nil {
		return nil, fmt.Errorf("%v %s", rc.Err, rc.ErrMessage)
	}
	out := map[string]string{}
	for _, c := range rc.Configs {
		out[c.Key] = c.MaybeValue()
	}
	return out, nil
}

func (f *franz) configs(ctx context.Context) (string, error) {
	cfg, err := f.describe(ctx)
	if err != nil {
		return "", err
	}
	if cfg["retention.ms"] != retention || cfg["max.message.bytes"] != maxMessageBytes {
		return "", fmt.Errorf("describe: retention.ms=%q max.message.bytes=%q", cfg["retention.ms"], cfg["max.message.bytes"])
	}
	v := alteredRetention
	resp, err := f.adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &v}}, f.topic)
	if err != nil {
		return "", fmt.Errorf("incremental alter: %w", err)
	}
	if r, err := resp.On(f.topic, nil); err != nil || r.Err != nil {
		return "", fmt.Errorf("incremental alter: %v %v %s", err, r.Err, r.ErrMessage)
	}
	cfg, err = f.describe(ctx)
	if err != nil {
		return "", err
	}
	if cfg["retention.ms"] != alteredRetention || cfg["max.message.bytes"] != maxMessageBytes {
		return "", fmt.Errorf("after incremental alter: retention.ms=%q max.message.bytes=%q", cfg["retention.ms"], cfg["max.message.bytes"])
	}
	return "retention.ms=3600000 described; incremental SET retention.ms=" + alteredRetention + " described", nil
}

func (f *franz) offset(ctx context.Context, start bool) (int64, error) {
	var lo kadm.ListedOffsets
	var err error
	if start {
		lo, err = f.adm.ListStartOffsets(ctx, f.topic)
	} else {
		lo, err = f.adm.ListEndOffsets(ctx, f.topic)
	}
	if err != nil {
		return 0, err
	}
	o, ok := lo.Lookup(f.topic, 0)
	if !ok {
		return 0, fmt.Errorf("no offset for %s/0", f.topic)
	}
	return o.Offset, o.Err
}

func (f *franz) deleteRecords(ctx context.Context) (string, error) {
	hw, err := f.offset(ctx, false)
	if err != nil {
		return "", err
	}
	if hw < 2 {
		return "", fmt.Errorf("partition 0 high watermark %d, need >= 2", hw)
	}
	target := hw / 2
	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: f.topic, Partition: 0, At: target, LeaderEpoch: -1})
	resp, err := f.adm.DeleteRecords(ctx, os)
	if err != nil {
		return "", err
	}
	r := resp[f.topic][0]
	if r.Err != nil {
		return "", fmt.Errorf("delete records: %w", r.Err)
	}
	low, err := f.offset(ctx, true)
	if err != nil {
		return "", err
	}
	if low != target || r.LowWatermark != target {
		return "", fmt.Errorf("after DeleteRecords(%d): low watermark %d, ListOffsets earliest %d", target, r.LowWatermark, low)
	}
	return fmt.Sprintf("p0 deleted below %d (hw %d); low watermark=%d, ListOffsets earliest=%d", target, hw, r.LowWatermark, low), nil
}

func (f *franz) deleteTopic(ctx context.Context) (string, error) {
	resp, err := f.adm.DeleteTopics(ctx, f.topic)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return "", err
	}
	deadline := time.Now().Add(stepTimeout)
	for n := 0; n < 100 && time.Now().Before(deadline); n++ {
		td, err := f.adm.ListTopics(ctx)
		if err == nil && !td.Has(f.topic) {
			return "gone from ListTopics", nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", fmt.Errorf("%s still listed after delete", f.topic)
}
