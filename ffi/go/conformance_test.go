package floodwall

// The HTTP conformance cases (tests/http/, format in its README) through Middleware over real
// HTTP: one server on 127.0.0.1 in front of the README's echo application, each case on a
// fresh engine and one kept-alive connection written by hand (net/http's client would clean
// the targets), every expectation checked as tests/support/http.rs checks it, and the
// transcript written to target/http-conformance/go.json for tests/http/compare.py.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var casesDir = filepath.Join("..", "..", "tests", "http")

type caseFile struct {
	Format      int        `json:"format"`
	Description string     `json:"description"`
	Cases       []httpCase `json:"cases"`
}

type httpCase struct {
	Name        string                     `json:"name"`
	Description string                     `json:"description"`
	Config      map[string]json.RawMessage `json:"config"`
	Steps       []httpStep                 `json:"steps"`
}

type httpStep struct {
	Request struct {
		Method  string                     `json:"method"`
		Target  string                     `json:"target"`
		Token   *string                    `json:"token"`
		Headers map[string]json.RawMessage `json:"headers"`
	} `json:"request"`
	App struct {
		Status *int    `json:"status"`
		Charge *string `json:"charge"`
	} `json:"app"`
	Expect expectation `json:"expect"`
}

type expectation struct {
	Status  int                `json:"status"`
	Reached bool               `json:"reached"`
	Code    *string            `json:"code"`
	Body    *string            `json:"body"`
	Headers map[string]*string `json:"headers"`
	Subject *string            `json:"subject"`
	Role    *string            `json:"role"`
}

// observed is what the client saw of one response.
type observed struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

type tokensFile struct {
	Auth   json.RawMessage   `json:"auth"`
	Tokens map[string]string `json:"tokens"`
}

func loadCases(t *testing.T) []caseFile {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(casesDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(paths)
	var files []caseFile
	for _, path := range paths {
		if filepath.Base(path) == "tokens.json" {
			continue
		}
		text, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var f caseFile
		if err := json.Unmarshal(text, &f); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if f.Format != 1 {
			t.Fatalf("%s: format %d", path, f.Format)
		}
		files = append(files, f)
	}
	return files
}

// caseConfig is the case's configuration with "auth": "suite" resolved.
func caseConfig(t *testing.T, c httpCase, tokens tokensFile) string {
	t.Helper()
	config := make(map[string]json.RawMessage, len(c.Config))
	for k, v := range c.Config {
		config[k] = v
	}
	if auth, ok := config["auth"]; ok && strings.TrimSpace(string(auth)) == `"suite"` {
		config["auth"] = tokens.Auth
	}
	text, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	return string(text)
}

type line struct{ name, value string }

// requestLines are the header lines sent for a step, as tests/support/http.rs request_lines
// makes them: the case's headers by name (a list is one line per item), the token, then the
// application's instructions.
func requestLines(t *testing.T, s httpStep, tokens tokensFile) []line {
	t.Helper()
	names := make([]string, 0, len(s.Request.Headers))
	for name := range s.Request.Headers {
		names = append(names, name)
	}
	sort.Strings(names)
	var lines []line
	for _, name := range names {
		raw := s.Request.Headers[name]
		var many []string
		if err := json.Unmarshal(raw, &many); err != nil {
			var one string
			if err := json.Unmarshal(raw, &one); err != nil {
				t.Fatalf("header %s: %s", name, raw)
			}
			many = []string{one}
		}
		for _, v := range many {
			lines = append(lines, line{name, v})
		}
	}
	if s.Request.Token != nil {
		token, ok := tokens.Tokens[*s.Request.Token]
		if !ok {
			t.Fatalf("no token %q in tokens.json", *s.Request.Token)
		}
		lines = append(lines, line{"Authorization", "Bearer " + token})
	}
	if s.App.Status != nil {
		lines = append(lines, line{"X-Test-Status", strconv.Itoa(*s.App.Status)})
	}
	if s.App.Charge != nil {
		lines = append(lines, line{"X-Test-Charge", *s.App.Charge})
	}
	return lines
}

// transcriptHeaders keeps what tests/support/http.rs transcript_headers keeps: floodwall's
// headers, the application's test headers and, on an answer floodwall gave, its content
// headers. A header sent twice keeps both values, so that a duplicate shows in compare.py.
func transcriptHeaders(h http.Header) map[string]string {
	_, reached := h["X-Test-Reached"]
	kept := map[string]string{}
	for key, values := range h {
		name := strings.ToLower(key)
		switch name {
		case "ratelimit-policy", "ratelimit", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset",
			"retry-after", "www-authenticate", "x-test-reached", "x-test-subject", "x-test-role", "x-ratelimit-cost":
		case "content-type", "content-length":
			if reached {
				continue
			}
		default:
			continue
		}
		kept[name] = strings.Join(values, ", ")
	}
	return kept
}

// check is tests/support/http.rs check: what is wrong with o against e.
func check(e expectation, o observed) []string {
	var wrong []string
	if o.Status != e.Status {
		wrong = append(wrong, fmt.Sprintf("status %d (want %d)", o.Status, e.Status))
	}
	if _, reached := o.Headers["x-test-reached"]; reached != e.Reached {
		wrong = append(wrong, fmt.Sprintf("reached %v (want %v)", reached, e.Reached))
	}
	if e.Code != nil {
		var body struct {
			Code *string `json:"code"`
		}
		_ = json.Unmarshal([]byte(o.Body), &body)
		if body.Code == nil || *body.Code != *e.Code {
			wrong = append(wrong, fmt.Sprintf("code %v (want %q)", body.Code, *e.Code))
		}
	}
	if e.Body != nil && o.Body != *e.Body {
		wrong = append(wrong, fmt.Sprintf("body %q (want %q)", o.Body, *e.Body))
	}
	for name, want := range e.Headers {
		got, ok := o.Headers[strings.ToLower(name)]
		if ok != (want != nil) || (ok && got != *want) {
			wrong = append(wrong, fmt.Sprintf("header %s: %q present %v (want %v)", name, got, ok, want))
		}
	}
	for name, want := range map[string]*string{"x-test-subject": e.Subject, "x-test-role": e.Role} {
		if want != nil && o.Headers[name] != *want {
			wrong = append(wrong, fmt.Sprintf("%s: %q (want %q)", name, o.Headers[name], *want))
		}
	}
	return wrong
}

// echo is the README's application.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	subject, role := "-", "-"
	if id, ok := IdentityFrom(r.Context()); ok {
		subject = id.Subject
		if id.Role != "" {
			role = id.Role
		}
	}
	h.Set("X-Test-Reached", "1")
	h.Set("X-Test-Subject", subject)
	h.Set("X-Test-Role", role)
	if charge, ok := r.Header["X-Test-Charge"]; ok {
		h.Set("X-RateLimit-Cost", charge[0])
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	status := http.StatusOK
	if s := r.Header.Get("X-Test-Status"); s != "" {
		var err error
		if status, err = strconv.Atoi(s); err != nil {
			status = http.StatusOK
		}
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte("ok"))
})

// testCost is the README's cost function: X-Test-Cost as a number, NaN when it is none.
func testCost(r *http.Request) float64 {
	v, ok := r.Header["X-Test-Cost"]
	if !ok {
		return 1
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v[0]), 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

// roundTrip writes one request on conn exactly as the case has it and reads the response.
func roundTrip(conn net.Conn, br *bufio.Reader, host, method, target string, lines []line) (observed, error) {
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return observed{}, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, host)
	for _, l := range lines {
		fmt.Fprintf(&b, "%s: %s\r\n", l.name, l.value)
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return observed{}, err
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return observed{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return observed{}, err
	}
	return observed{Status: resp.StatusCode, Headers: transcriptHeaders(resp.Header), Body: string(body)}, nil
}

func TestHTTPConformance(t *testing.T) {
	var tokens tokensFile
	text, err := os.ReadFile(filepath.Join(casesDir, "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(text, &tokens); err != nil {
		t.Fatal(err)
	}
	var current atomic.Value // *Middleware of the case being run
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		current.Load().(*Middleware).ServeHTTP(w, r)
	}))
	defer server.Close()
	host := server.Listener.Addr().String()

	transcript := map[string][]observed{}
	var mismatches []string
	cases := 0
	for _, file := range loadCases(t) {
		for _, c := range file.Cases {
			cases++
			config := caseConfig(t, c, tokens)
			e, err := FromJSON(config)
			if err != nil {
				t.Fatalf("%s: %v\n%s", c.Name, err, config)
			}
			current.Store(&Middleware{Engine: e, Next: echo, Authenticate: e.HasAuth(), Cost: testCost})
			conn, err := net.Dial("tcp", host)
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			var seen []observed
			for i, step := range c.Steps {
				lines := requestLines(t, step, tokens)
				o, err := roundTrip(conn, br, host, step.Request.Method, step.Request.Target, lines)
				if err != nil {
					t.Fatalf("%s step %d: %v", c.Name, i, err)
				}
				for _, wrong := range check(step.Expect, o) {
					mismatches = append(mismatches, fmt.Sprintf("%s step %d: %s", c.Name, i, wrong))
				}
				seen = append(seen, o)
			}
			conn.Close()
			e.Close()
			transcript[c.Name] = seen
		}
	}
	if cases < 80 {
		t.Fatalf("only %d cases", cases)
	}
	dir := filepath.Join("..", "..", "target", "http-conformance")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	doc, err := json.MarshalIndent(map[string]interface{}{"runner": "go", "cases": transcript}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.json"), append(doc, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if len(mismatches) > 0 {
		t.Fatalf("%d mismatches:\n%s", len(mismatches), strings.Join(mismatches, "\n"))
	}
}
