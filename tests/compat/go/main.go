// Command compat runs the tests/compat scenario against a sluice broker with
// franz-go (+kadm) or sarama:
//
//	compat -client franz-go|sarama -bootstrap HOST:PORT
//
// It prints one line per step, `compat: <client> <step> PASS|FAIL|SKIP <detail>`,
// and exits 0 whatever the results (tests/compat/run reads the lines).  Every
// loop is bounded by a count and a deadline.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

const (
	total            = 200
	partitions       = 3
	retention        = "3600000"
	maxMessageBytes  = "2000000"
	alteredRetention = "7200000"
	stepTimeout      = 30 * time.Second
)

var clientName string

var codecs = []string{"gzip", "snappy", "lz4", "zstd"}

type planEntry struct {
	codec string
	ids   []int
}

// split spreads the message ids 0..total-1 over the codecs.
func split(cs []string) []planEntry {
	var out []planEntry
	start := 0
	for n, c := range cs {
		count := total / len(cs)
		if n < total%len(cs) {
			count++
		}
		e := planEntry{codec: c}
		for i := start; i < start+count; i++ {
			e.ids = append(e.ids, i)
		}
		start += count
		out = append(out, e)
	}
	return out
}

func valueOf(i int, codec string) string {
	return fmt.Sprintf("%s|%d|%s|%s", clientName, i, codec, strings.Repeat("x", i%50))
}

// record parses one consumed record into got; returns an error on a bad key.
func record(got map[int]string, key, value []byte) error {
	parts := strings.Split(string(value), "|")
	if len(parts) < 3 {
		return fmt.Errorf("unexpected value %q", value)
	}
	var i int
	if _, err := fmt.Sscanf(parts[1], "%d", &i); err != nil {
		return fmt.Errorf("unexpected value %q", value)
	}
	if string(key) != fmt.Sprintf("k%d", i) {
		return fmt.Errorf("key %q for message %d", key, i)
	}
	got[i] = string(value)
	return nil
}

func checkConsumed(got map[int]string, plan []planEntry) error {
	want := map[int]string{}
	for _, e := range plan {
		for _, i := range e.ids {
			want[i] = valueOf(i, e.codec)
		}
	}
	if len(got) != len(want) {
		var missing []int
		for i := range want {
			if _, ok := got[i]; !ok && len(missing) < 10 {
				missing = append(missing, i)
			}
		}
		return fmt.Errorf("consumed %d distinct messages, want %d; missing e.g. %v", len(got), len(want), missing)
	}
	for i, v := range want {
		if got[i] != v {
			return fmt.Errorf("message %d: got %q, want %q", i, got[i], v)
		}
	}
	return nil
}

// skipErr marks a step as skipped rather than failed.
type skipErr struct{ why string }

func (s skipErr) Error() string { return s.why }

func report(step, status, detail string) {
	detail = strings.Join(strings.Fields(detail), " ")
	fmt.Printf("compat: %s %s %s %s\n", clientName, step, status, detail)
}

func runStep(step string, fn func(ctx context.Context) (string, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*stepTimeout)
	defer cancel()
	done := make(chan struct{})
	var detail string
	var err error
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		detail, err = fn(ctx)
	}()
	select {
	case <-done:
	case <-time.After(2*stepTimeout + 5*time.Second):
		err = fmt.Errorf("step did not finish within %v", 2*stepTimeout+5*time.Second)
	}
	if s, ok := err.(skipErr); ok {
		report(step, "SKIP", s.why)
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", clientName, step, err)
		report(step, "FAIL", err.Error())
	} else {
		report(step, "PASS", detail)
	}
}

type scenario interface {
	create(ctx context.Context) (string, error)
	produce(ctx context.Context) (string, error)
	consume(ctx context.Context) (string, error)
	configs(ctx context.Context) (string, error)
	deleteRecords(ctx context.Context) (string, error)
	deleteTopic(ctx context.Context) (string, error)
	close()
}

func main() {
	flag.StringVar(&clientName, "client", "", "franz-go or sarama")
	bootstrap := flag.String("bootstrap", "", "HOST:PORT")
	topicFlag := flag.String("topic", "", "topic name (default compat-<client>-<pid>)")
	flag.Parse()
	topic := *topicFlag
	if topic == "" {
		topic = fmt.Sprintf("compat-%s-%d", clientName, os.Getpid())
	}
	group := topic + "-group"
	var s scenario
	var err error
	switch clientName {
	case "franz-go":
		s, err = newFranz(*bootstrap, topic, group)
	case "sarama":
		s, err = newSarama(*bootstrap, topic, group)
	default:
		fmt.Fprintln(os.Stderr, "-client must be franz-go or sarama")
		os.Exit(2)
	}
	if err != nil {
		report("create", "FAIL", "client setup: "+err.Error())
		return
	}
	defer s.close()
	runStep("create", s.create)
	runStep("produce", s.produce)
	runStep("consume", s.consume)
	runStep("configs", s.configs)
	runStep("delete-records", s.deleteRecords)
	runStep("delete-topic", s.deleteTopic)
}
