// Command share consumes one partition with franz-go share-group members (KIP-932,
// kgo.ShareGroup: ShareGroupHeartbeat, ShareFetch, ShareAcknowledge).
//
//	share -bootstrap HOST:PORT [-records 3000] [-members 3] [-timeout 90s]
//
// It creates a one-partition topic, produces the records, starts the members (each accepts
// what it polls: franz-go's implicit acknowledgement at the next poll, then FlushAcks before
// it leaves), and succeeds (prints `share: PASS ...`, exits 0) when every record was
// delivered at least once, no record was delivered twice with delivery count 1 (the broker
// handed no record to two members at once), at least two members received records, and no
// acknowledgement failed; otherwise it prints `share: FAIL ...` and exits 1. The broker must
// start share-partitions at the log start (sluice: share_auto_offset_reset = "earliest").
// Every loop is bounded by the deadline.
package main

import (
	"context"
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

type seen struct {
	mu     sync.Mutex
	vals   map[string]int // deliveries per value
	firsts map[string]int // deliveries at count 1 per value
	by     map[int]int    // records per member
}

func (s *seen) add(member int, v string, count int32) {
	s.mu.Lock()
	s.vals[v]++
	if count <= 1 {
		s.firsts[v]++
	}
	s.by[member]++
	s.mu.Unlock()
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.vals)
}

func fail(format string, args ...any) {
	fmt.Printf("share: FAIL "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	bootstrap := flag.String("bootstrap", "", "broker address")
	records := flag.Int("records", 3000, "records to produce")
	members := flag.Int("members", 3, "share-group members")
	timeout := flag.Duration("timeout", 90*time.Second, "deadline for the whole run")
	flag.Parse()
	if *bootstrap == "" {
		fail("-bootstrap is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	topic, group := "share-franz-"+suffix, "sg-franz-"+suffix

	admin, err := kgo.NewClient(kgo.SeedBrokers(*bootstrap))
	if err != nil {
		fail("client: %v", err)
	}
	adm := kadm.NewClient(admin)
	if _, err := adm.CreateTopic(ctx, 1, -1, nil, topic); err != nil {
		fail("create topic: %v", err)
	}
	recs := make([]*kgo.Record, 0, *records)
	for i := 0; i < *records; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Value: []byte(fmt.Sprintf("v-%d", i))})
	}
	if err := admin.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		fail("produce: %v", err)
	}

	s := &seen{vals: map[string]int{}, firsts: map[string]int{}, by: map[int]int{}}
	var ackErrors atomic.Int64
	var wg sync.WaitGroup
	for m := 0; m < *members; m++ {
		wg.Add(1)
		go func(m int) {
			defer wg.Done()
			cl, err := kgo.NewClient(
				kgo.SeedBrokers(*bootstrap),
				kgo.ShareGroup(group),
				kgo.ConsumeTopics(topic),
				kgo.ShareMaxRecords(100),
				kgo.ShareAckCallback(func(_ *kgo.Client, rs kgo.ShareAckResults) {
					if !rs.Ok() {
						ackErrors.Add(1)
						fmt.Fprintf(os.Stderr, "member %d: ack error %v\n", m, rs.Error())
					}
				}),
			)
			if err != nil {
				fail("member %d: %v", m, err)
			}
			defer cl.Close()
			for ctx.Err() == nil && s.count() < *records {
				pctx, pcancel := context.WithTimeout(ctx, time.Second)
				fs := cl.PollFetches(pctx)
				pcancel()
				fs.EachRecord(func(r *kgo.Record) { s.add(m, string(r.Value), r.DeliveryCount()) })
			}
			cl.MarkAcks(kgo.AckAccept)
			fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = cl.FlushAcks(fctx)
			fcancel()
		}(m)
	}
	wg.Wait()
	admin.Close()
	if got := s.count(); got < *records {
		fail("%d of %d records delivered before the deadline", got, *records)
	}
	twice := 0
	for _, n := range s.firsts {
		if n > 1 {
			twice++
		}
	}
	if twice > 0 {
		fail("%d records delivered more than once at delivery count 1", twice)
	}
	busy := 0
	for _, n := range s.by {
		if n > 0 {
			busy++
		}
	}
	if busy < 2 && *members > 1 {
		fail("only %d member(s) received records: %v", busy, s.by)
	}
	if n := ackErrors.Load(); n > 0 {
		fail("%d acknowledgement callbacks reported errors", n)
	}
	again := 0
	for _, n := range s.vals {
		again += n - 1
	}
	fmt.Printf("share: PASS %d records, %d members received %v, %d redeliveries\n", *records, *members, s.by, again)
}
