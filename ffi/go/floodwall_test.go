package floodwall

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const secret = "a-go-test-secret-of-at-least-32-bytes!!"

const config = `
[auth]
algorithms = ["HS256"]
role_claim = "role"
keys = [{ kid = "k1", secret = "` + secret + `" }]

[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 2
window = "1m"
roles.premium = { limit = 5 }

[services.api]
upstreams = [{ name = "a", url = "http://127.0.0.1:9001" }, { name = "b", url = "http://127.0.0.1:9002", weight = 2 }]
`

// token mints an HS256 JWT with the standard library.
func token(t *testing.T, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	msg := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT","kid":"k1"}`)) + "." + enc.EncodeToString([]byte(payload))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(msg))
	return msg + "." + enc.EncodeToString(mac.Sum(nil))
}

func engine(t *testing.T) *Engine {
	t.Helper()
	e, err := FromTOML(config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func TestVersion(t *testing.T) {
	if Version() != "0.1.0" {
		t.Fatalf("version %q", Version())
	}
}

func TestInvalidConfigIsATypedError(t *testing.T) {
	_, err := FromTOML("[[rules]]\nname = \"x\"\nkey = \"global\"\nalgorithm = \"fixed_window\"\nlimit = 0\nwindow = \"1s\"\n")
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != InvalidConfig || !strings.Contains(fe.Message, "rules[0].limit") {
		t.Fatalf("got %v", err)
	}
	if !errors.Is(err, &Error{Code: InvalidConfig}) {
		t.Fatal("errors.Is by code")
	}
	if _, err := FromFile("/nonexistent.toml"); err == nil {
		t.Fatal("a missing file is an error")
	}
	if _, err := FromJSON(`{"rules": []}`); err != nil {
		t.Fatal(err)
	}
}

func TestCheckAdmitsThenDenies(t *testing.T) {
	e := engine(t)
	now := time.UnixMilli(60_000)
	r := Request{Method: "GET", Path: "/api/orders", Subject: "alice", Now: now}
	for i, want := range []bool{true, true, false} {
		d, err := e.Check(r)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != want || d.Rule != "per-user" || d.Store != StoreMemory {
			t.Fatalf("request %d: %+v", i, d)
		}
	}
	d, err := e.CheckWithHeaders(r)
	if err != nil || d.Allowed || d.Headers["Retry-After"] != "60" || d.RetryAfter != time.Minute {
		t.Fatalf("%+v %v", d, err)
	}
	if _, err := e.Check(Request{Method: "GET", Path: "/", Subject: "bob", Cost: 3}); !errors.Is(err, &Error{Code: CostExceedsLimit}) {
		t.Fatalf("got %v", err)
	}
	ds, errs := e.CheckMany([]Request{{Method: "GET", Path: "/", Subject: "carol"}, {Method: "GET", Path: "/", Subject: "carol", Cost: 9}})
	if errs[0] != nil || !ds[0].Allowed || errs[1] == nil {
		t.Fatalf("%+v %v", ds, errs)
	}
}

func TestAuthenticateAndAuthorize(t *testing.T) {
	e := engine(t)
	good := token(t, `{"sub":"dave","role":"premium","exp":4102444800}`)
	id, err := e.Authenticate("Bearer " + good)
	if err != nil || id.Subject != "dave" || id.Role != "premium" || !strings.Contains(id.Claims, `"sub":"dave"`) {
		t.Fatalf("%+v %v", id, err)
	}
	_, d, err := e.Authorize("Bearer "+good, Request{Method: "GET", Path: "/"})
	if err != nil || !d.Allowed || d.Remaining != 4 {
		t.Fatalf("%+v %v", d, err)
	}
	forged := good[:len(good)-4] + "AAAA"
	_, err = e.Authenticate("Bearer " + forged)
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != BadSignature || !strings.Contains(fe.WWWAuthenticate, `error="invalid_token"`) {
		t.Fatalf("got %v", err)
	}
	if _, err := e.Authenticate(""); !errors.Is(err, &Error{Code: MissingToken}) {
		t.Fatalf("got %v", err)
	}
}

func TestPickAndFinishAcrossGoroutines(t *testing.T) {
	e := engine(t)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				l, err := e.Pick("api")
				if err != nil {
					t.Error(err)
					return
				}
				if i%5 == 0 {
					l.Release()
				} else if err := l.Finish(Success, time.Millisecond); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if _, err := e.Pick("nope"); !errors.Is(err, &Error{Code: UnknownService}) {
		t.Fatalf("got %v", err)
	}
	state, err := e.Upstreams("api")
	if err != nil || !strings.Contains(state, `"calls":`) || !strings.Contains(state, `"in_flight":0`) {
		t.Fatalf("%s %v", state, err)
	}
}

func TestMiddleware(t *testing.T) {
	e := engine(t)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := IdentityFrom(r.Context())
		w.Write([]byte("hello " + id.Subject))
	})
	h := &Middleware{Engine: e, Next: next, Authenticate: true}
	serve := func(auth string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/api/orders", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	rec := serve("")
	if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != `Bearer realm="floodwall"` {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	bearer := "Bearer " + token(t, `{"sub":"erin","exp":4102444800}`)
	for i, want := range []int{200, 200, 429} {
		rec = serve(bearer)
		if rec.Code != want {
			t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	if rec.Header().Get("Retry-After") == "" || rec.Header().Get("RateLimit-Remaining") != "0" {
		t.Fatalf("%v", rec.Header())
	}
	rec = serve("Bearer " + token(t, `{"sub":"frank","exp":4102444800}`))
	if rec.Code != 200 || rec.Body.String() != "hello frank" || rec.Header().Get("RateLimit-Limit") != "2" {
		t.Fatalf("%d %s %v", rec.Code, rec.Body, rec.Header())
	}
}
