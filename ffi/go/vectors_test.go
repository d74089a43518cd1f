package floodwall

// The conformance vectors (tests/vectors/*.json, format in its README) through the Go
// package and the C ABI under it, on the memory store and on a redis-server of its own:
// every step of every case on a fresh engine, as tests/vectors.rs and tests/redis_vectors.rs
// run them in Rust.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

type vectorFile struct {
	Format int          `json:"format"`
	Cases  []vectorCase `json:"cases"`
}

type vectorCase struct {
	Name   string          `json:"name"`
	Config json.RawMessage `json:"config"`
	Steps  []vectorStep    `json:"steps"`
}

type vectorStep struct {
	NowMs   int64 `json:"now_ms"`
	Request struct {
		Subject, Role, Method, Path, IP string
		Headers                         map[string]string `json:"headers"`
		Cost                            *uint64           `json:"cost"`
	} `json:"request"`
	Expect  map[string]json.RawMessage `json:"expect"`
	Hold    string                     `json:"hold"`
	Release []string                   `json:"release"`
	Admin   *vectorAdmin               `json:"admin"`
}

// vectorAdmin is an administration of one key at the step's time.
type vectorAdmin struct {
	Op, Rule, Role string
	Key            *string `json:"key"`
	DurationMs     uint64  `json:"duration_ms"`
	Points         uint64  `json:"points"`
	Limit          uint64  `json:"limit"`
	LifetimeMs     uint64  `json:"lifetime_ms"`
}

// vectorCodes are the error kinds the vectors expect, by their snake_case names.
var vectorCodes = map[string]Code{
	"cost_exceeds_limit": CostExceedsLimit,
	"invalid_cost":       InvalidCost,
	"invalid_config":     InvalidConfig,
	"unknown_rule":       UnknownRule,
}

// runAdmin runs the admin step on e; what it gets wrong.
func runAdmin(e *Engine, step vectorStep, want Store) []string {
	a := step.Admin
	k := Key{Rule: a.Rule, Role: a.Role, Absent: a.Key == nil, Now: time.UnixMilli(step.NowMs)}
	if a.Key != nil {
		k.Key = *a.Key
	}
	var status *KeyStatus
	var err error
	switch a.Op {
	case "inspect":
		var s KeyStatus
		s, err = e.Inspect(k)
		status = &s
	case "reset":
		err = e.ResetKey(k)
	case "block":
		err = e.BlockKey(k, time.Duration(a.DurationMs)*time.Millisecond)
	case "penalize":
		err = e.Penalize(k, a.Points)
	case "reward":
		err = e.Reward(k, a.Points)
	case "set_limit":
		err = e.SetKeyLimit(k, a.Limit, time.Duration(a.LifetimeMs)*time.Millisecond)
	case "clear_limit":
		err = e.ClearKeyLimit(k)
	default:
		return []string{"no admin op " + a.Op}
	}
	if raw, ok := step.Expect["error"]; ok {
		var kind string
		_ = json.Unmarshal(raw, &kind)
		if code, known := vectorCodes[kind]; !known || !errors.Is(err, &Error{Code: code}) {
			return []string{fmt.Sprintf("%v instead of error %s", err, kind)}
		}
		return nil
	}
	if err != nil {
		return []string{fmt.Sprintf("error %v", err)}
	}
	if status == nil {
		return nil
	}
	var wrong []string
	check := func(name string, got string) {
		if raw, ok := step.Expect[name]; ok && strings.TrimSpace(string(raw)) != got {
			wrong = append(wrong, fmt.Sprintf("%s: got %s, want %s", name, got, raw))
		}
	}
	orNull := func(present bool, d time.Duration) string {
		if !present {
			return "null"
		}
		return fmt.Sprint(d.Milliseconds())
	}
	check("limit", fmt.Sprint(status.Limit))
	check("remaining", fmt.Sprint(status.Remaining))
	check("reset_after_ms", fmt.Sprint(status.ResetAfter.Milliseconds()))
	check("blocked_for_ms", orNull(status.Blocked, status.BlockedFor))
	check("key_limit_for_ms", orNull(status.HasKeyLimit, status.KeyLimitFor))
	if status.Store != want {
		wrong = append(wrong, fmt.Sprintf("answered by store %d, not %d", status.Store, want))
	}
	return wrong
}

func loadVectors(t *testing.T) []vectorCase {
	paths, err := filepath.Glob(filepath.Join("..", "..", "tests", "vectors", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no vector files: %v", err)
	}
	sort.Strings(paths)
	var cases []vectorCase
	for _, path := range paths {
		text, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var file vectorFile
		if err := json.Unmarshal(text, &file); err != nil || file.Format != 1 {
			t.Fatalf("%s: format %d, %v", path, file.Format, err)
		}
		cases = append(cases, file.Cases...)
	}
	return cases
}

// mismatches lists what d (or err) gets wrong of expect.
func mismatches(d Decision, err error, expect map[string]json.RawMessage) []string {
	var wrong []string
	if raw, ok := expect["error"]; ok {
		var kind string
		_ = json.Unmarshal(raw, &kind)
		code, known := vectorCodes[kind]
		if !known {
			return []string{"no Go code for the error " + kind}
		}
		if !errors.Is(err, &Error{Code: code}) {
			wrong = append(wrong, fmt.Sprintf("%+v / %v instead of error %s", d, err, kind))
		}
		return wrong
	}
	if err != nil {
		return []string{fmt.Sprintf("error %v", err)}
	}
	check := func(name string, got any) {
		raw, ok := expect[name]
		if !ok {
			return
		}
		want := strings.TrimSpace(string(raw))
		var text string
		switch g := got.(type) {
		case string:
			if g == "" && want == "null" {
				return
			}
			b, _ := json.Marshal(g)
			text = string(b)
		default:
			text = fmt.Sprint(g)
		}
		if text != want {
			wrong = append(wrong, fmt.Sprintf("%s: got %s, want %s", name, text, want))
		}
	}
	check("allowed", d.Allowed)
	check("rule", d.Rule)
	check("blocked", d.Blocked)
	check("reset_after_ms", d.ResetAfter.Milliseconds())
	check("retry_after_ms", d.RetryAfter.Milliseconds())
	if d.Rule != "" {
		check("limit", d.Limit)
		check("remaining", d.Remaining)
	} else {
		for _, name := range []string{"limit", "remaining"} {
			if raw, ok := expect[name]; ok && strings.TrimSpace(string(raw)) != "null" {
				wrong = append(wrong, fmt.Sprintf("%s: no rule matched, want %s", name, raw))
			}
		}
	}
	if raw, ok := expect["headers"]; ok {
		var headers map[string]*string
		_ = json.Unmarshal(raw, &headers)
		for name, want := range headers {
			got, present := "", false
			for n, v := range d.Headers {
				if strings.EqualFold(n, name) {
					got, present = v, true
				}
			}
			switch {
			case want == nil && present:
				wrong = append(wrong, fmt.Sprintf("header %s: got %q, want none", name, got))
			case want != nil && got != *want:
				wrong = append(wrong, fmt.Sprintf("header %s: got %q, want %q", name, got, *want))
			}
		}
	}
	return wrong
}

func TestVectorsOnTheMemoryStore(t *testing.T) {
	runVectors(t, nil, StoreMemory)
}

func TestVectorsOnRedis(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := listener.Addr().(*net.TCPAddr).Port
	listener.Close()
	server := exec.Command("redis-server", "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := server.Start(); err != nil {
		t.Fatalf("redis-server does not start: %v", err)
	}
	defer func() {
		_ = server.Process.Kill()
		_ = server.Wait()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on port %d does not answer: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	store := func(n int) map[string]any {
		return map[string]any{"kind": "redis", "url": fmt.Sprintf("redis://127.0.0.1:%d", port),
			"clock": "local", "prefix": fmt.Sprintf("go%d:", n), "on_error": "deny", "timeout": "2s"}
	}
	runVectors(t, store, StoreRedis)
}

// runVectors runs every case, with the [store] section store(case number) when given; every
// decision comes from want (or, for a repeated denial, the deny cache).
func runVectors(t *testing.T, store func(int) map[string]any, want Store) {
	cases := loadVectors(t)
	if len(cases) < 40 {
		t.Fatalf("%d cases", len(cases))
	}
	for n, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			config := string(c.Config)
			if store != nil {
				var object map[string]any
				if err := json.Unmarshal(c.Config, &object); err != nil {
					t.Fatal(err)
				}
				object["store"] = store(n)
				text, _ := json.Marshal(object)
				config = string(text)
			}
			e, err := FromJSON(config)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			held := map[string]Decision{}
			for i, step := range c.Steps {
				if step.Admin != nil {
					if wrong := runAdmin(e, step, want); len(wrong) > 0 {
						t.Errorf("step %d (now_ms %d, %s): %s", i, step.NowMs, step.Admin.Op, strings.Join(wrong, "; "))
					}
					continue
				}
				for _, name := range step.Release {
					d, ok := held[name]
					if !ok {
						t.Fatalf("step %d releases %s, held by no step", i, name)
					}
					if err := d.Release(); err != nil {
						t.Fatal(err)
					}
					delete(held, name)
				}
				r := step.Request
				req := Request{Method: r.Method, Path: r.Path, Subject: r.Subject, Role: r.Role, IP: r.IP,
					Headers: r.Headers, Now: time.UnixMilli(step.NowMs)}
				if req.Method == "" {
					req.Method = "GET"
				}
				if req.Path == "" {
					req.Path = "/"
				}
				if r.Cost != nil {
					req.Cost = *r.Cost
					req.Peek = *r.Cost == 0
				}
				d, err := e.CheckWithHeaders(req)
				wrong := mismatches(d, err, step.Expect)
				cached := d.Store == StoreDenyCache && !d.Allowed && want == StoreRedis
				if err == nil && d.Store != want && !cached {
					wrong = append(wrong, fmt.Sprintf("decided by store %d, not %d", d.Store, want))
				}
				if step.Hold != "" {
					if d.Holds {
						held[step.Hold] = d
					} else {
						wrong = append(wrong, "holds nothing to keep as "+step.Hold)
					}
				} else if err := d.Release(); err != nil {
					wrong = append(wrong, err.Error())
				}
				if len(wrong) > 0 {
					t.Errorf("step %d (now_ms %d): %s", i, step.NowMs, strings.Join(wrong, "; "))
				}
			}
		})
	}
}
