// Command staticcoop drives a cooperative-sticky consumer group of static members
// (group.instance.id) with franz-go against a broker, the way franz-go's own
// TestGroupETL "cooperative-sticky/static" case does: members join in waves,
// some quit after a few polls (and are removed by instance id, as an admin
// would), so partitions move and members give them up and rejoin.
//
//	staticcoop -bootstrap HOST:PORT [-partitions 11] [-records 20000] [-timeout 120s]
//
// It succeeds (prints `staticcoop: PASS ...`, exits 0) when every record was
// consumed exactly once, and then the group is Stable with every partition
// owned by a member and no lag; otherwise it prints `staticcoop: FAIL ...` and
// exits 1. Every loop is bounded by the deadline.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type partOffset struct {
	p int32
	o int64
}

type world struct {
	bootstrap, topic, group string
	records                 int
	deadline                time.Time
	done                    chan struct{} // closed when the run ends
	wg                      sync.WaitGroup
	instances               atomic.Int64

	mu         sync.Mutex
	seen       map[partOffset]struct{}
	duplicates int
	firstErr   error
}

func (w *world) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.firstErr == nil {
		w.firstErr = err
	}
}

func (w *world) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.firstErr
}

func (w *world) consumed() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen)
}

func (w *world) stopped() bool {
	select {
	case <-w.done:
		return true
	default:
		return time.Now().After(w.deadline)
	}
}

// member runs one static consumer; with quitAfter >= 0 it quits after that many
// poll rounds without processing the last one's records, commits nothing more,
// and is removed from the group by instance id (LeaveGroup), like TestGroupETL's
// members that "bail".
func (w *world) member(quitAfter int) {
	defer w.wg.Done()
	instance := fmt.Sprintf("static-%s-%d", w.group, w.instances.Add(1))
	rounds := 0
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(w.bootstrap),
		kgo.ConsumerGroup(w.group),
		kgo.ConsumeTopics(w.topic),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.InstanceID(instance),
		kgo.SessionTimeout(20*time.Second),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.BlockRebalanceOnPoll(),
		kgo.MaxBufferedRecords(10000),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, _ map[string][]int32) {
			if quitAfter >= 0 && rounds >= quitAfter {
				return
			}
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				w.fail(fmt.Errorf("%s: commit in revoke: %v", instance, err))
			}
		}),
		kgo.OnPartitionsLost(func(context.Context, *kgo.Client, map[string][]int32) {}),
	)
	if err != nil {
		w.fail(err)
		return
	}
	defer func() {
		// As TestGroupETL: close, then remove the static member by instance id.
		cl.AllowRebalance()
		cl.Close()
		admCl, err := kgo.NewClient(kgo.SeedBrokers(w.bootstrap))
		if err != nil {
			return
		}
		defer admCl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = kadm.NewClient(admCl).LeaveGroup(ctx, kadm.LeaveGroup(w.group).InstanceIDs(instance))
	}()
	for !w.stopped() {
		cl.AllowRebalance()
		// A member that quits after some rounds commits what it processed before each
		// round, so only the round it quits in stays uncommitted (and unprocessed).
		if quitAfter > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := cl.CommitUncommittedOffsets(ctx)
			cancel()
			if err != nil {
				w.fail(fmt.Errorf("%s: commit: %v", instance, err))
			}
		}
		for range 4 {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			fetches := cl.PollRecords(ctx, 25)
			cancel()
			if err := fetches.Err(); errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				if w.stopped() {
					return
				}
				continue
			}
			if errs := fetches.Errors(); len(errs) > 0 {
				w.fail(fmt.Errorf("%s: poll errors: %v", instance, errs))
				return
			}
			if quitAfter >= 0 && rounds >= quitAfter {
				return
			}
			w.mu.Lock()
			for _, r := range fetches.Records() {
				if _, err := strconv.Atoi(string(r.Key)); err != nil {
					w.firstErr = fmt.Errorf("bad key %q", r.Key)
				}
				k := partOffset{r.Partition, r.Offset}
				if _, dup := w.seen[k]; dup {
					w.duplicates++
				}
				w.seen[k] = struct{}{}
			}
			w.mu.Unlock()
		}
		rounds++
	}
}

// ownedPartitions counts the partitions of topic that some member is assigned,
// failing the count (-1) if two members own the same one.
func ownedPartitions(members []kadm.DescribedGroupMember, topic string) int {
	owners := map[int32]int{}
	for _, m := range members {
		if c, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range c.Topics {
				if t.Topic != topic {
					continue
				}
				for _, p := range t.Partitions {
					owners[p]++
				}
			}
		}
	}
	for _, n := range owners {
		if n > 1 {
			return -1
		}
	}
	return len(owners)
}

func run(bootstrap string, partitions, records int, timeout time.Duration) error {
	w := &world{
		bootstrap: bootstrap,
		topic:     fmt.Sprintf("staticcoop-%d", time.Now().UnixNano()),
		group:     fmt.Sprintf("staticcoop-g-%d", time.Now().UnixNano()),
		records:   records,
		deadline:  time.Now().Add(timeout),
		done:      make(chan struct{}),
		seen:      make(map[partOffset]struct{}),
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithDeadline(context.Background(), w.deadline)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, int32(partitions), 1, nil, w.topic); err != nil {
		return fmt.Errorf("create topic: %v", err)
	}
	recs := make([]*kgo.Record, records)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: w.topic, Key: []byte(strconv.Itoa(i)), Value: []byte("v")}
	}
	for n := 0; n < 100; n++ {
		if err = cl.ProduceSync(ctx, recs...).FirstErr(); err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond) // the topic may not be in metadata yet
	}
	if err != nil {
		return fmt.Errorf("produce: %v", err)
	}

	// TestGroupETL's waves: three members that stay and two that bail (at once,
	// after two rounds); later three more that stay and two more that bail.
	start := func(quitAfter ...int) {
		for _, q := range quitAfter {
			w.wg.Add(1)
			go w.member(q)
		}
	}
	start(-1, -1, -1, 0, 2)
	time.Sleep(5 * time.Second)
	start(-1, -1, -1, 0, 1)

	var lastLag string
	ok := false
	for n := 0; n < 10000 && time.Now().Before(w.deadline); n++ {
		if w.err() != nil {
			break
		}
		if w.consumed() >= records {
			lags, err := adm.Lag(ctx, w.group)
			if err == nil {
				l := lags[w.group]
				owned := ownedPartitions(l.Members, w.topic) == partitions
				lastLag = fmt.Sprintf("state=%s members=%d owned=%v lag=%d", l.State, len(l.Members), owned, l.Lag.Total())
				if l.Error() == nil && l.State == "Stable" && owned && l.Lag.Total() == 0 {
					ok = true
					break
				}
			} else {
				lastLag = err.Error()
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	close(w.done)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	facts := fmt.Sprintf("consumed=%d of %d, duplicates=%d, group: %s", len(w.seen), records, w.duplicates, lastLag)
	switch {
	case w.firstErr != nil:
		return fmt.Errorf("%v (%s)", w.firstErr, facts)
	case len(w.seen) < records:
		return fmt.Errorf("not every record consumed before the deadline (%s)", facts)
	case w.duplicates > 0:
		return fmt.Errorf("records consumed twice (%s)", facts)
	case !ok:
		return fmt.Errorf("group did not settle with every partition owned and no lag (%s)", facts)
	}
	fmt.Printf("staticcoop: PASS %s\n", facts)
	return nil
}

func main() {
	bootstrap := flag.String("bootstrap", "127.0.0.1:9092", "broker")
	partitions := flag.Int("partitions", 11, "partitions of the topic")
	records := flag.Int("records", 20000, "records to produce and consume")
	timeout := flag.Duration("timeout", 120*time.Second, "deadline for the whole run")
	flag.Parse()
	if err := run(*bootstrap, *partitions, *records, *timeout); err != nil {
		fmt.Printf("staticcoop: FAIL %v\n", err)
		os.Exit(1)
	}
}
