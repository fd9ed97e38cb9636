// Command kip848 consumes a topic with franz-go members of one group, some using KIP-848's
// next-gen protocol (kgo.ServerSideBalancer, ConsumerGroupHeartbeat) and, with -classic N,
// N using the classic protocol (cooperative-sticky) in the same group (mixed membership).
//
//	kip848 -bootstrap HOST:PORT [-partitions 6] [-records 6000] [-members 3] [-classic 1] [-timeout 120s]
//
// It creates the topic, produces the records, starts the members (a few records later one
// more KIP-848 member joins and one member leaves, so partitions move), and succeeds (prints
// `kip848: PASS ...`, exits 0) when every record was consumed, the commits reached the end
// offsets and the group, described, is a consumer group whose members own every partition;
// otherwise it prints `kip848: FAIL ...` and exits 1. Every loop is bounded by the deadline.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type seen struct {
	mu   sync.Mutex
	vals map[string]int
}

func (s *seen) add(v string) {
	s.mu.Lock()
	s.vals[v]++
	s.mu.Unlock()
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.vals)
}

func fail(format string, args ...any) {
	fmt.Printf("kip848: FAIL "+format+"\n", args...)
	os.Exit(1)
}

func member(ctx context.Context, bootstrap, topic, group string, nextGen bool, s *seen, wg *sync.WaitGroup) context.CancelFunc {
	opts := []kgo.Opt{
		kgo.SeedBrokers(bootstrap),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(10 * time.Second),
		kgo.HeartbeatInterval(500 * time.Millisecond),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, _ map[string][]int32) {
			_ = cl.CommitUncommittedOffsets(ctx)
		}),
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil)),
	}
	if nextGen {
		opts = append(opts, kgo.ServerSideBalancer())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		fail("client: %v", err)
	}
	mctx, cancel := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cl.Close()
		for mctx.Err() == nil {
			fs := cl.PollFetches(mctx)
			fs.EachRecord(func(r *kgo.Record) {
				s.add(string(r.Value))
			})
			if err := cl.CommitUncommittedOffsets(mctx); err != nil && mctx.Err() == nil {
				fmt.Printf("kip848: commit error (records are consumed again): %v\n", err)
			}
		}
	}()
	return cancel
}

func main() {
	bootstrap := flag.String("bootstrap", "127.0.0.1:9092", "broker")
	partitions := flag.Int("partitions", 6, "partitions of the topic")
	records := flag.Int("records", 6000, "records to produce")
	members := flag.Int("members", 3, "members using the KIP-848 protocol")
	classic := flag.Int("classic", 1, "members using the classic protocol")
	timeout := flag.Duration("timeout", 120*time.Second, "deadline of the whole run")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	topic, group := "kip848-"+stamp, "kip848-group-"+stamp

	admCl, err := kgo.NewClient(kgo.SeedBrokers(*bootstrap))
	if err != nil {
		fail("admin client: %v", err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if _, err := adm.CreateTopic(ctx, int32(*partitions), 1, nil, topic); err != nil {
		fail("create topic: %v", err)
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(*bootstrap), kgo.DefaultProduceTopic(topic))
	if err != nil {
		fail("producer: %v", err)
	}
	for i := 0; i < *records; i++ {
		prod.Produce(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}, func(_ *kgo.Record, err error) {
			if err != nil {
				fail("produce: %v", err)
			}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		fail("flush: %v", err)
	}
	prod.Close()

	s := &seen{vals: map[string]int{}}
	var wg sync.WaitGroup
	var cancels []context.CancelFunc
	for i := 0; i < *members; i++ {
		cancels = append(cancels, member(ctx, *bootstrap, topic, group, true, s, &wg))
	}
	for i := 0; i < *classic; i++ {
		cancels = append(cancels, member(ctx, *bootstrap, topic, group, false, s, &wg))
	}
	// Partitions move mid-way: one more KIP-848 member joins, the first member leaves.
	for s.count() < *records/3 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	cancels = append(cancels, member(ctx, *bootstrap, topic, group, true, s, &wg))
	cancels[0]()
	for s.count() < *records && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	if got := s.count(); got != *records {
		fail("consumed %d distinct records of %d", got, *records)
	}
	// The commits reach the end offsets; the group, described with ConsumerGroupDescribe, is
	// a consumer group whose members (of both kinds) own every partition.
	var lag int64 = -1
	owned, kinds := 0, map[int8]int{}
	groupType := "?"
	for ctx.Err() == nil {
		lag, owned, kinds = state(ctx, adm, topic, group)
		if lag == 0 && owned == *partitions && kinds[1] > 0 && (*classic == 0 || kinds[0] == *classic) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if lag != 0 || owned != *partitions {
		fail("lag %d, %d of %d partitions owned, members by type %v", lag, owned, *partitions, kinds)
	}
	if *classic > 0 && kinds[0] != *classic {
		fail("described %d classic members, want %d (members by type %v)", kinds[0], *classic, kinds)
	}
	if listed, err := adm.ListGroupsByType(ctx, []string{"consumer"}); err == nil {
		if _, ok := listed[group]; ok {
			groupType = "consumer"
		}
	}
	redelivered := 0
	s.mu.Lock()
	for _, n := range s.vals {
		redelivered += n - 1
	}
	s.mu.Unlock()
	for _, c := range cancels {
		c()
	}
	wg.Wait()
	if groupType != "consumer" {
		fail("the group is listed as %q, not a consumer group", groupType)
	}
	fmt.Printf("kip848: PASS %d records, %d redelivered, %d partitions owned, members by type %v (0 classic, 1 consumer), group type %s\n",
		*records, redelivered, owned, kinds, groupType)
}

// state: the group's total lag (-1 when unknown), the partitions its members own, and its
// members counted by member type.
func state(ctx context.Context, adm *kadm.Client, topic, group string) (int64, int, map[int8]int) {
	kinds := map[int8]int{}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return -1, 0, kinds
	}
	commits, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return -1, 0, kinds
	}
	var lag int64
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := commits.Lookup(o.Topic, o.Partition)
		if !ok || c.Err != nil {
			lag += o.Offset
			return
		}
		lag += o.Offset - c.At
	})
	described, err := adm.DescribeConsumerGroups(ctx, group)
	if err != nil {
		return lag, 0, kinds
	}
	owned := 0
	for _, m := range described[group].Members {
		kinds[m.MemberType]++
		owned += len(m.Assignment[topic])
	}
	return lag, owned, kinds
}
