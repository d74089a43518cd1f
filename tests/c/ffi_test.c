/* Exercises every function of include/floodwall.h, error paths included. Built by
 * `make c-test` with -Wall -Werror and AddressSanitizer/UBSan, then run under valgrind. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "floodwall.h"

static int checks = 0;
static int failures = 0;

#define CHECK(cond)                                                                   \
  do {                                                                                \
    checks++;                                                                         \
    if (!(cond)) {                                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);        \
      failures++;                                                                     \
    }                                                                                 \
  } while (0)

static const char *CONFIG =
    "[auth]\n"
    "algorithms = [\"HS256\"]\n"
    "role_claim = \"role\"\n"
    "keys = [{ kid = \"k1\", secret = \"a-c-test-secret-of-at-least-32-bytes!!\" }]\n"
    "[[rules]]\n"
    "name = \"per-user\"\n"
    "key = \"subject\"\n"
    "algorithm = \"fixed_window\"\n"
    "limit = 2\n"
    "window = \"1m\"\n"
    "roles.premium = { limit = 5 }\n"
    "[services.api]\n"
    "upstreams = [{ name = \"a\", url = \"http://127.0.0.1:9001\" }, { name = \"b\", url = \"http://127.0.0.1:9002\" }]\n";

/* HS256, kid k1, {"sub":"carol","role":"premium","exp":4102444800}, made with PyJWT: signed
 * with the secret above, and with another secret (a bad signature). */
static const char *TOKEN =
    "Bearer eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0."
    "eyJzdWIiOiJjYXJvbCIsInJvbGUiOiJwcmVtaXVtIiwiZXhwIjo0MTAyNDQ0ODAwfQ."
    "WhBVZuK7PeESvCs6GC_LEZl3Wk4jORRu_4G8gxjRl3Y";
static const char *FORGED =
    "Bearer eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0."
    "eyJzdWIiOiJjYXJvbCIsInJvbGUiOiJwcmVtaXVtIiwiZXhwIjo0MTAyNDQ0ODAwfQ."
    "ZZEPuM6Osc9xRKZKJKkWz9X9yPcepEvxwRZsT8qSQfQ";

static void last_message(char *buf, size_t len) {
  size_t n = 0;
  if (fw_last_error_message(buf, len, &n) != FW_OK) buf[0] = 0;
}

/* The value of header `name` (exactly as spelt) among `headers`, or NULL. */
static const char *header_value(const fw_headers *headers, const char *name) {
  size_t count = 0;
  if (fw_headers_len(headers, &count) != FW_OK) return NULL;
  for (size_t i = 0; i < count; i++) {
    const char *n = NULL, *v = NULL;
    if (fw_headers_get(headers, i, &n, &v) == FW_OK && strcmp(n, name) == 0) return v;
  }
  return NULL;
}

/* A request as a server received it from 127.0.0.1, at the engine's clock, cost 1. */
static fw_http_request http_request(const char *target, const fw_header *headers, size_t len) {
  fw_http_request r;
  memset(&r, 0, sizeof r);
  r.method = "GET";
  r.target = target;
  r.peer = "127.0.0.1:50000";
  r.headers = headers;
  r.headers_len = len;
  r.cost = 1;
  r.stage = FW_HTTP_GUARD;
  r.now_ms = -1;
  return r;
}

/* fw_http's exchange for `request` (NULL when the call failed), with its verdict. */
static fw_http_exchange *decide(const fw_engine *engine, const fw_http_request *request, fw_http_verdict *verdict) {
  fw_http_exchange *exchange = NULL;
  if (fw_http(engine, request, &exchange) != FW_OK) return NULL;
  if (fw_http_exchange_verdict(exchange, verdict) != FW_OK) *verdict = 99;
  return exchange;
}

/* The code of a problem body, as "code":"<code>". */
static int body_has_code(const fw_http_exchange *exchange, const char *code) {
  const char *body = NULL;
  size_t len = 0;
  char want[64];
  snprintf(want, sizeof want, "\"code\":\"%s\"", code);
  return fw_http_exchange_body(exchange, &body, &len) == FW_OK && strlen(body) == len && strstr(body, want) != NULL;
}

/* The HTTP layer: what a host's middleware writes for a request, and what finishing does. */
static void http_layer(void) {
  char buf[512];
  fw_engine *engine = NULL;
  CHECK(fw_engine_from_toml(CONFIG, &engine) == FW_OK);
  bool has_auth = false;
  CHECK(fw_engine_has_auth(engine, &has_auth) == FW_OK && has_auth);
  CHECK(fw_engine_has_auth(NULL, &has_auth) == FW_NULL_ARGUMENT);
  CHECK(fw_engine_has_auth(engine, NULL) == FW_NULL_ARGUMENT);

  /* The headers a host hands over: one name per line, lower-case. */
  char *names = NULL;
  size_t names_len = 0;
  CHECK(fw_engine_http_headers(engine, &names, &names_len) == FW_OK && names != NULL);
  if (names != NULL) CHECK(strcmp(names, "authorization\nx-forwarded-for\nforwarded") == 0 && names_len == strlen(names));
  fw_string_free(names);
  names = NULL;
  CHECK(fw_engine_http_response_headers(engine, &names, NULL) == FW_OK && names != NULL && names[0] == 0);
  fw_string_free(names);
  CHECK(fw_engine_http_headers(NULL, &names, NULL) == FW_NULL_ARGUMENT);
  CHECK(fw_engine_http_response_headers(engine, NULL, NULL) == FW_NULL_ARGUMENT);

  /* No token: a 401 with its challenge and a problem body, written as the exchange says. */
  fw_http_request request = http_request("/api/orders", NULL, 0);
  fw_http_verdict verdict = FW_HTTP_SKIP;
  fw_http_exchange *exchange = decide(engine, &request, &verdict);
  CHECK(exchange != NULL && verdict == FW_HTTP_REFUSE);
  uint16_t status = 0;
  CHECK(fw_http_exchange_status(exchange, &status) == FW_OK && status == 401);
  const fw_headers *headers = NULL;
  CHECK(fw_http_exchange_headers(exchange, &headers) == FW_OK && headers != NULL);
  const char *value = header_value(headers, "WWW-Authenticate");
  CHECK(value != NULL && strcmp(value, "Bearer realm=\"floodwall\"") == 0);
  value = header_value(headers, "Content-Type");
  CHECK(value != NULL && strcmp(value, "application/problem+json") == 0);
  const char *body = NULL;
  size_t body_len = 0;
  CHECK(fw_http_exchange_body(exchange, &body, &body_len) == FW_OK);
  CHECK(strcmp(body, "{\"type\":\"about:blank\",\"title\":\"Unauthorized\",\"status\":401,"
                     "\"detail\":\"The request carries no bearer token in its Authorization header.\","
                     "\"code\":\"missing_token\"}") == 0);
  snprintf(buf, sizeof buf, "%zu", body_len);
  value = header_value(headers, "Content-Length");
  CHECK(value != NULL && strcmp(value, buf) == 0 && body_len == strlen(body));
  const fw_identity *who = (const fw_identity *)1;
  CHECK(fw_http_exchange_identity(exchange, &who) == FW_OK && who == NULL);
  bool shared = true;
  CHECK(fw_http_exchange_touches_shared_store(exchange, &shared) == FW_OK && !shared);
  /* Finished once, with the status written; a second finish is refused and changes nothing. */
  CHECK(fw_http_finish(engine, exchange, status, NULL, 0) == FW_OK);
  CHECK(fw_http_finish(engine, exchange, status, NULL, 0) == FW_INVALID_ARGUMENT);
  last_message(buf, sizeof buf);
  CHECK(strstr(buf, "already finished") != NULL);
  fw_http_exchange_free(exchange);

  /* A valid token, sent as any-case header names: let through with the decision's headers
   * and the verified caller. */
  fw_header with_token[1] = {{"authorization", TOKEN}};
  request = http_request("/API/orders/", with_token, 1);
  request.now_ms = 60000; /* a window's start: the retry comes in a whole minute */
  exchange = decide(engine, &request, &verdict);
  CHECK(exchange != NULL && verdict == FW_HTTP_PASS);
  CHECK(fw_http_exchange_status(exchange, &status) == FW_OK && status == 0);
  CHECK(fw_http_exchange_headers(exchange, &headers) == FW_OK);
  value = header_value(headers, "RateLimit-Limit");
  CHECK(value != NULL && strcmp(value, "5") == 0);
  value = header_value(headers, "RateLimit-Remaining");
  CHECK(value != NULL && strcmp(value, "4") == 0);
  CHECK(header_value(headers, "Content-Type") == NULL && header_value(headers, "Retry-After") == NULL);
  CHECK(fw_http_exchange_body(exchange, &body, NULL) == FW_OK && body[0] == 0);
  who = NULL;
  CHECK(fw_http_exchange_identity(exchange, &who) == FW_OK && who != NULL);
  const char *text = NULL;
  CHECK(fw_identity_subject(who, &text) == FW_OK && strcmp(text, "carol") == 0);
  CHECK(fw_identity_role(who, &text) == FW_OK && strcmp(text, "premium") == 0);
  fw_header response[1] = {{"Content-Type", "application/json"}};
  CHECK(fw_http_finish(engine, exchange, 200, response, 1) == FW_OK);
  fw_http_exchange_free(exchange);

  /* The same caller, the same counter: a 429 with Retry-After once the limit is spent. */
  for (int i = 0; i < 4; i++) {
    exchange = decide(engine, &request, &verdict);
    CHECK(exchange != NULL && verdict == FW_HTTP_PASS);
    CHECK(fw_http_finish(engine, exchange, 204, NULL, 0) == FW_OK);
    fw_http_exchange_free(exchange);
  }
  exchange = decide(engine, &request, &verdict);
  CHECK(exchange != NULL && verdict == FW_HTTP_REFUSE && body_has_code(exchange, "rate_limited"));
  CHECK(fw_http_exchange_status(exchange, &status) == FW_OK && status == 429);
  CHECK(fw_http_exchange_headers(exchange, &headers) == FW_OK);
  value = header_value(headers, "Retry-After");
  CHECK(value != NULL && strcmp(value, "60") == 0);
  value = header_value(headers, "RateLimit-Remaining");
  CHECK(value != NULL && strcmp(value, "0") == 0);
  CHECK(fw_http_finish(engine, exchange, 429, NULL, 0) == FW_OK);
  fw_http_exchange_free(exchange);

  /* The rate-limit stage with a caller an earlier stage verified: no token asked for. */
  request = http_request("/api/orders", NULL, 0);
  request.stage = FW_HTTP_RATE_LIMIT;
  request.caller_subject = "dave";
  /* On carol's clock: a request at the real time would sweep its shard of her expired-looking
   * counter when the hash puts both keys in one shard. */
  request.now_ms = 60000;
  exchange = decide(engine, &request, &verdict);
  CHECK(exchange != NULL && verdict == FW_HTTP_PASS);
  CHECK(fw_http_exchange_headers(exchange, &headers) == FW_OK);
  value = header_value(headers, "RateLimit-Remaining");
  CHECK(value != NULL && strcmp(value, "1") == 0);
  who = (const fw_identity *)1;
  CHECK(fw_http_exchange_identity(exchange, &who) == FW_OK && who == NULL);
  /* Freed unfinished: nothing is recorded. */
  fw_http_exchange_free(exchange);
  fw_http_exchange_free(NULL);

  /* A cost that is no count is answered 400. */
  request = http_request("/api/orders", with_token, 1);
  request.cost = 1.5;
  exchange = decide(engine, &request, &verdict);
  CHECK(exchange != NULL && verdict == FW_HTTP_REFUSE && body_has_code(exchange, "invalid_cost"));
  CHECK(fw_http_exchange_status(exchange, &status) == FW_OK && status == 400);
  CHECK(fw_http_finish(engine, exchange, 400, NULL, 0) == FW_OK);
  fw_http_exchange_free(exchange);

  /* Every finished response was recorded once: the 401, five passes, the 429 and the 400. */
  char *json = NULL;
  CHECK(fw_report_json(engine, -1, &json, NULL) == FW_OK && json != NULL);
  if (json != NULL) {
    CHECK(strstr(json, "\"status_classes\":{\"2xx\":5,\"4xx\":3}") != NULL);
    CHECK(strstr(json, "\"auth_rejections\":{\"missing_token\":1}") != NULL);
  }
  fw_string_free(json);

  /* Unusable arguments: an error, the out-pointer untouched. */
  fw_http_exchange *untouched = NULL;
  request = http_request("/api/orders", NULL, 0);
  CHECK(fw_http(NULL, &request, &untouched) == FW_NULL_ARGUMENT && untouched == NULL);
  CHECK(fw_http(engine, NULL, &untouched) == FW_NULL_ARGUMENT && untouched == NULL);
  CHECK(fw_http(engine, &request, NULL) == FW_NULL_ARGUMENT);
  request.target = NULL;
  CHECK(fw_http(engine, &request, &untouched) == FW_NULL_ARGUMENT && untouched == NULL);
  request = http_request("/api/orders", NULL, 1);
  CHECK(fw_http(engine, &request, &untouched) == FW_NULL_ARGUMENT && untouched == NULL);
  last_message(buf, sizeof buf);
  CHECK(strstr(buf, "request.headers") != NULL);
  fw_header broken[2] = {{"Accept", "*/*"}, {"X-Api-Key", NULL}};
  request = http_request("/api/orders", broken, 2);
  CHECK(fw_http(engine, &request, &untouched) == FW_NULL_ARGUMENT && untouched == NULL);
  last_message(buf, sizeof buf);
  CHECK(strstr(buf, "request.headers[1].value") != NULL);
  fw_header latin1[1] = {{"authorization", "Bearer \xe9"}};
  request = http_request("/api/orders", latin1, 1);
  CHECK(fw_http(engine, &request, &untouched) == FW_INVALID_UTF8 && untouched == NULL);
  request = http_request("/api/\xff", NULL, 0);
  CHECK(fw_http(engine, &request, &untouched) == FW_INVALID_UTF8 && untouched == NULL);
  request = http_request("/api/orders", NULL, 0);
  request.stage = 9;
  CHECK(fw_http(engine, &request, &untouched) == FW_INVALID_ARGUMENT && untouched == NULL);
  request = http_request("/api/orders", NULL, 0);
  request.stage = FW_HTTP_RATE_LIMIT;
  request.caller_role = "premium";
  CHECK(fw_http(engine, &request, &untouched) == FW_INVALID_ARGUMENT && untouched == NULL);

  fw_http_verdict no_verdict = 77;
  CHECK(fw_http_exchange_verdict(NULL, &no_verdict) == FW_NULL_ARGUMENT && no_verdict == 77);
  CHECK(fw_http_exchange_status(NULL, &status) == FW_NULL_ARGUMENT);
  CHECK(fw_http_exchange_headers(NULL, &headers) == FW_NULL_ARGUMENT);
  CHECK(fw_http_exchange_body(NULL, &body, &body_len) == FW_NULL_ARGUMENT);
  CHECK(fw_http_exchange_identity(NULL, &who) == FW_NULL_ARGUMENT);
  CHECK(fw_http_exchange_touches_shared_store(NULL, &shared) == FW_NULL_ARGUMENT);
  CHECK(fw_http_finish(engine, NULL, 200, NULL, 0) == FW_NULL_ARGUMENT);

  request = http_request("/api/orders", with_token, 1);
  request.now_ms = 60000;
  exchange = decide(engine, &request, &verdict);
  CHECK(exchange != NULL && verdict == FW_HTTP_REFUSE); /* carol is spent */
  CHECK(fw_http_exchange_verdict(exchange, NULL) == FW_NULL_ARGUMENT);
  CHECK(fw_http_exchange_status(exchange, NULL) == FW_NULL_ARGUMENT);
  CHECK(fw_http_exchange_headers(exchange, NULL) == FW_NULL_ARGUMENT);
  CHECK(fw_http_exchange_body(exchange, NULL, &body_len) == FW_NULL_ARGUMENT);
  CHECK(fw_http_exchange_identity(exchange, NULL) == FW_NULL_ARGUMENT);
  CHECK(fw_http_exchange_touches_shared_store(exchange, NULL) == FW_NULL_ARGUMENT);
  /* Refused finishes leave the exchange to finish: no engine, a status that is none, a NULL
   * header array, another engine. */
  CHECK(fw_http_finish(NULL, exchange, 429, NULL, 0) == FW_NULL_ARGUMENT);
  CHECK(fw_http_finish(engine, exchange, 42, NULL, 0) == FW_INVALID_ARGUMENT);
  CHECK(fw_http_finish(engine, exchange, 429, NULL, 2) == FW_NULL_ARGUMENT);
  fw_engine *other = NULL;
  CHECK(fw_engine_from_json("{\"rules\": []}", &other) == FW_OK);
  CHECK(fw_engine_has_auth(other, &has_auth) == FW_OK && !has_auth);
  CHECK(fw_http_finish(other, exchange, 429, NULL, 0) == FW_INVALID_ARGUMENT);
  last_message(buf, sizeof buf);
  CHECK(strstr(buf, "another engine") != NULL);
  fw_engine_free(other);
  CHECK(fw_http_finish(engine, exchange, 429, NULL, 0) == FW_OK);
  fw_http_exchange_free(exchange);
  fw_engine_free(engine);

  /* Skipped paths, forwarding headers behind a trusted proxy, and the allow and deny lists
   * replaced while the engine serves. */
  CHECK(fw_engine_from_json("{\"http\": {\"trusted_proxies\": [\"127.0.0.1\"], \"skip_paths\": [\"/metrics\"],"
                            " \"deny\": {\"addresses\": [\"198.51.100.7\"]}},"
                            " \"rules\": [{\"name\": \"r\", \"key\": \"ip\", \"algorithm\": \"sliding_window\","
                            " \"limit\": 2, \"window\": \"1h\", \"count_responses\": \"failed\","
                            " \"cost_header\": \"X-RateLimit-Cost\"}]}",
                            &engine) == FW_OK);
  CHECK(fw_engine_http_response_headers(engine, &names, NULL) == FW_OK && names != NULL);
  if (names != NULL) CHECK(strcmp(names, "x-ratelimit-cost") == 0);
  fw_string_free(names);

  request = http_request("/metrics", NULL, 0);

  request.stage = FW_HTTP_RATE_LIMIT; /* no [auth] */
  exchange = decide(engine, &request, &verdict);
  CHECK(exchange != NULL && verdict == FW_HTTP_SKIP);
  size_t count = 7;
  CHECK(fw_http_exchange_headers(exchange, &headers) == FW_OK && fw_headers_len(headers, &count) == FW_OK && count == 0);
  CHECK(fw_http_finish(engine, exchange, 200, NULL, 0) == FW_OK);
  CHECK(fw_http_finish(engine, exchange, 200, NULL, 0) == FW_INVALID_ARGUMENT);
  fw_http_exchange_free(exchange);

  /* Two lines of X-Forwarded-For are one list: its last hop is the client, denied. */
  fw_header forwarded[2] = {{"X-Forwarded-For", "203.0.113.9"}, {"x-forwarded-for", "198.51.100.7"}};
  request = http_request("/api/orders", forwarded, 2);
  request.stage = FW_HTTP_RATE_LIMIT; /* no [auth] */
  exchange = decide(engine, &request, &verdict);
  CHECK(exchange != NULL && verdict == FW_HTTP_REFUSE && body_has_code(exchange, "access_denied"));
  CHECK(fw_http_exchange_status(exchange, &status) == FW_OK && status == 403);
  CHECK(fw_http_finish(engine, exchange, 403, NULL, 0) == FW_OK);
  fw_http_exchange_free(exchange);

  /* count_responses = "failed": successes are given back, failures stay counted, and the
   * response's X-RateLimit-Cost adds to the count. */
  fw_header from_client[1] = {{"X-Forwarded-For", "192.0.2.1"}};
  request = http_request("/api/orders", from_client, 1);
  request.stage = FW_HTTP_RATE_LIMIT; /* no [auth] */
  for (int i = 0; i < 3; i++) {
    exchange = decide(engine, &request, &verdict);
    CHECK(exchange != NULL && verdict == FW_HTTP_PASS);
    CHECK(fw_http_finish(engine, exchange, 200, NULL, 0) == FW_OK);
    fw_http_exchange_free(exchange);
  }
  exchange = decide(engine, &request, &verdict);
  CHECK(exchange != NULL && verdict == FW_HTTP_PASS);
  CHECK(fw_http_exchange_headers(exchange, &headers) == FW_OK);
  value = header_value(headers, "RateLimit-Remaining");
  CHECK(value != NULL && strcmp(value, "1") == 0);
  fw_header costly[1] = {{"x-ratelimit-cost", "1"}};
  CHECK(fw_http_finish(engine, exchange, 502, costly, 1) == FW_OK);
  fw_http_exchange_free(exchange);
  exchange = decide(engine, &request, &verdict);
  CHECK(exchange != NULL && verdict == FW_HTTP_REFUSE && body_has_code(exchange, "rate_limited"));
  fw_http_exchange_free(exchange);

  /* The lists, read and replaced; a bad entry names itself and changes nothing. */
  char *lists = NULL;
  CHECK(fw_engine_access_lists_json(engine, &lists, NULL) == FW_OK && lists != NULL);
  if (lists != NULL) CHECK(strstr(lists, "\"deny\":{\"addresses\":[\"198.51.100.7\"]") != NULL);
  fw_string_free(lists);
  CHECK(fw_engine_set_access_lists_json(engine, "{\"deny\": {\"addresses\": [\"nope\"]}}") == FW_INVALID_CONFIG);
  last_message(buf, sizeof buf);
  CHECK(strstr(buf, "deny.addresses[0]") != NULL);
  CHECK(fw_engine_set_access_lists_json(engine, "{\"allow\": 3}") == FW_INVALID_CONFIG);
  CHECK(fw_engine_set_access_lists_json(engine, "not json") == FW_INVALID_CONFIG);
  CHECK(fw_engine_set_access_lists_json(engine, NULL) == FW_NULL_ARGUMENT);
  CHECK(fw_engine_set_access_lists_json(NULL, "{}") == FW_NULL_ARGUMENT);
  CHECK(fw_engine_access_lists_json(NULL, &lists, NULL) == FW_NULL_ARGUMENT);
  CHECK(fw_engine_access_lists_json(engine, NULL, NULL) == FW_NULL_ARGUMENT);
  request = http_request("/api/orders", forwarded, 2);
  request.stage = FW_HTTP_RATE_LIMIT; /* no [auth] */
  exchange = decide(engine, &request, &verdict);
  CHECK(exchange != NULL && verdict == FW_HTTP_REFUSE && body_has_code(exchange, "access_denied"));
  fw_http_exchange_free(exchange);
  CHECK(fw_engine_set_access_lists_json(engine, "{\"deny\": {\"headers\": {\"User-Agent\": [\"BadBot/1.0\"]}}}") == FW_OK);
  CHECK(fw_engine_http_headers(engine, &names, NULL) == FW_OK && names != NULL);
  if (names != NULL) CHECK(strcmp(names, "authorization\nx-forwarded-for\nforwarded\nuser-agent") == 0);
  fw_string_free(names);
  fw_header bot[2] = {{"X-Forwarded-For", "198.51.100.7"}, {"user-agent", "BadBot/1.0"}};
  request = http_request("/api/orders", bot, 2);
  request.stage = FW_HTTP_RATE_LIMIT; /* no [auth] */
  exchange = decide(engine, &request, &verdict);
  CHECK(exchange != NULL && verdict == FW_HTTP_REFUSE && body_has_code(exchange, "access_denied"));
  fw_http_exchange_free(exchange);
  bot[1].value = "curl/8.0";
  exchange = decide(engine, &request, &verdict);
  CHECK(exchange != NULL && verdict == FW_HTTP_PASS); /* the address is no longer denied */
  fw_http_exchange_free(exchange);
  fw_engine_free(engine);
}

int main(void) {
  char buf[512];
  size_t n = 0;

  /* Version. */
  CHECK(strcmp(fw_version(), "0.1.0") == 0);
  CHECK(FW_VERSION_MAJOR == 0 && FW_VERSION_MINOR == 1);

  /* Construction errors: NULL, bad UTF-8, invalid config, missing file. */
  fw_engine *engine = NULL;
  CHECK(fw_engine_from_toml(NULL, &engine) == FW_NULL_ARGUMENT && engine == NULL);
  CHECK(fw_engine_from_toml(CONFIG, NULL) == FW_NULL_ARGUMENT);
  CHECK(fw_engine_from_toml("name = \"\xff\"", &engine) == FW_INVALID_UTF8 && engine == NULL);
  CHECK(fw_engine_from_toml("[[rules]]\nname = \"x\"\nkey = \"global\"\nalgorithm = \"fixed_window\"\nlimit = 0\nwindow = \"1s\"\n", &engine) == FW_INVALID_CONFIG);
  last_message(buf, sizeof buf);
  CHECK(strstr(buf, "rules[0].limit") != NULL);
  CHECK(fw_engine_from_json("{\"rules\": 3}", &engine) == FW_INVALID_CONFIG);
  CHECK(fw_engine_from_file("/nonexistent/floodwall.toml", &engine) == FW_INVALID_CONFIG);
  fw_engine_free(NULL);

  /* A message too long for the buffer reports its length. */
  CHECK(fw_last_error_message(buf, 4, &n) == FW_BUFFER_TOO_SMALL && n > 4);
  /* … and asking with too small a buffer does not replace the message being read. */
  CHECK(fw_last_error_message(buf, sizeof buf, &n) == FW_OK && strstr(buf, "cannot read") != NULL);

  CHECK(fw_engine_from_toml(CONFIG, &engine) == FW_OK && engine != NULL);
  fw_engine_free(engine);
  CHECK(fw_engine_from_json("{\"rules\": []}", &engine) == FW_OK);
  fw_engine_free(engine);
  CHECK(fw_engine_from_toml(CONFIG, &engine) == FW_OK);

  /* Rule names. */
  CHECK(fw_engine_rule_name(engine, 0, buf, sizeof buf, &n) == FW_OK && strcmp(buf, "per-user") == 0 && n == 8);
  CHECK(fw_engine_rule_name(engine, 0, buf, 3, &n) == FW_BUFFER_TOO_SMALL && n == 8);
  CHECK(fw_engine_rule_name(engine, 7, buf, sizeof buf, &n) == FW_INVALID_ARGUMENT);
  CHECK(fw_engine_rule_name(NULL, 0, buf, sizeof buf, &n) == FW_NULL_ARGUMENT);

  /* Checks: admitted twice, then denied with a retry. */
  fw_request req = {"GET", "/api/orders", "alice", "free", "192.0.2.1", 1, 60000, NULL, 0};
  fw_decision d;
  memset(&d, 0, sizeof d);
  CHECK(fw_check(engine, &req, &d) == FW_OK && d.allowed && d.remaining == 1 && d.rule_index == 0);
  CHECK(d.store == FW_STORE_MEMORY && d.limit == 2);
  CHECK(fw_check(engine, &req, &d) == FW_OK && d.allowed && d.remaining == 0);
  CHECK(fw_check(engine, &req, &d) == FW_OK && !d.allowed && d.retry_after_ms == 60000 && !d.blocked);
  /* A rule that blocks after a denial says so, with the block's end to wait for. */
  fw_engine *blocking = NULL;
  CHECK(fw_engine_from_toml("[[rules]]\nname = \"r\"\nkey = \"subject\"\nalgorithm = \"fixed_window\"\n"
                            "limit = 1\nwindow = \"1s\"\nblock_for = \"5m\"", &blocking) == FW_OK);
  CHECK(fw_check(blocking, &req, &d) == FW_OK && d.allowed && !d.blocked);
  CHECK(fw_check(blocking, &req, &d) == FW_OK && !d.allowed && d.blocked && d.retry_after_ms == 300000);
  fw_engine_free(blocking);
  /* A concurrency rule: a decision holds its place until fw_release. */
  fw_engine *inflight = NULL;
  CHECK(fw_engine_from_toml("[[rules]]\nname = \"c\"\nkey = \"subject\"\nalgorithm = \"concurrency\"\nlimit = 1",
                            &inflight) == FW_OK);
  /* On the engine's clock, as fw_acquire decides. */
  fw_request live = req;
  live.now_ms = -1;
  fw_decision held;
  CHECK(fw_check(inflight, &live, &held) == FW_OK && held.allowed && held.permit != 0);
  CHECK(fw_check(inflight, &live, &d) == FW_OK && !d.allowed && d.permit == 0);
  CHECK(fw_release(inflight, held.permit) == FW_OK);
  CHECK(fw_release(inflight, held.permit) == FW_INVALID_ARGUMENT);
  CHECK(fw_last_error_message(buf, sizeof buf, &n) == FW_OK && strstr(buf, "no permit") != NULL);
  CHECK(fw_release(inflight, 0) == FW_OK);
  CHECK(fw_release(NULL, 1) == FW_NULL_ARGUMENT);
  CHECK(fw_check(inflight, &live, &d) == FW_OK && d.allowed && d.permit != 0);
  /* Waiting for a place: none is released within 20 ms, so the denial comes back. */
  fw_decision waited;
  CHECK(fw_acquire(inflight, &live, 20, &waited) == FW_OK && !waited.allowed && waited.permit == 0);
  CHECK(fw_release(inflight, d.permit) == FW_OK);
  CHECK(fw_acquire(inflight, &live, 20, &waited) == FW_OK && waited.allowed && waited.permit != 0);
  CHECK(fw_acquire(inflight, NULL, 20, &waited) == FW_NULL_ARGUMENT);
  /* Per-key administration. */
  fw_engine *admin = NULL;
  CHECK(fw_engine_from_toml("[[rules]]\nname = \"u\"\nkey = \"subject\"\nalgorithm = \"fixed_window\"\n"
                            "limit = 5\nwindow = \"1h\"\nblock_for = \"1m\"", &admin) == FW_OK);
  fw_key alice = {"u", "alice", NULL, 0};
  fw_key_status status;
  CHECK(fw_inspect(admin, &alice, &status) == FW_OK && status.limit == 5 && status.remaining == 5 && !status.blocked);
  CHECK(fw_penalize(admin, &alice, 3) == FW_OK);
  CHECK(fw_inspect(admin, &alice, &status) == FW_OK && status.remaining == 2);
  CHECK(fw_reward(admin, &alice, 1) == FW_OK);
  CHECK(fw_inspect(admin, &alice, &status) == FW_OK && status.remaining == 3);
  CHECK(fw_block_key(admin, &alice, 30000) == FW_OK);
  CHECK(fw_inspect(admin, &alice, &status) == FW_OK && status.blocked && status.blocked_for_ms > 20000 && status.blocked_for_ms <= 30000);
  CHECK(fw_reset_key(admin, &alice) == FW_OK);
  CHECK(fw_inspect(admin, &alice, &status) == FW_OK && status.remaining == 5 && !status.blocked);
  fw_key unknown = {"nope", "alice", NULL, 0};
  CHECK(fw_inspect(admin, &unknown, &status) == FW_UNKNOWN_RULE);
  CHECK(fw_last_error_message(buf, sizeof buf, &n) == FW_OK && strstr(buf, "nope") != NULL);
  fw_key no_rule = {NULL, "alice", NULL, 0};
  CHECK(fw_reset_key(admin, &no_rule) == FW_NULL_ARGUMENT);
  CHECK(fw_inspect(admin, NULL, &status) == FW_NULL_ARGUMENT);
  CHECK(fw_inspect(admin, &alice, NULL) == FW_NULL_ARGUMENT);
  CHECK(!status.has_key_limit && status.key_limit_for_ms == 0);
  /* A rule without key_limits takes no key limit. */
  CHECK(fw_set_key_limit(admin, &alice, 9, 60000) == FW_INVALID_CONFIG);
  CHECK(fw_last_error_message(buf, sizeof buf, &n) == FW_OK && strstr(buf, "takes no key limits") != NULL);
  fw_engine_free(admin);
  /* A key's own limit for a while. */
  fw_engine *limited = NULL;
  CHECK(fw_engine_from_toml("[[rules]]\nname = \"u\"\nkey = \"subject\"\nalgorithm = \"fixed_window\"\n"
                            "limit = 1\nwindow = \"1h\"\nkey_limits = true", &limited) == FW_OK);
  CHECK(fw_set_key_limit(limited, &alice, 3, 60000) == FW_OK);
  CHECK(fw_inspect(limited, &alice, &status) == FW_OK && status.limit == 3 && status.remaining == 3);
  CHECK(status.has_key_limit && status.key_limit_for_ms > 50000 && status.key_limit_for_ms <= 60000);
  fw_request own = req;
  own.now_ms = -1;
  CHECK(fw_check(limited, &own, &d) == FW_OK && d.allowed && d.limit == 3 && d.remaining == 2);
  CHECK(fw_clear_key_limit(limited, &alice) == FW_OK);
  CHECK(fw_inspect(limited, &alice, &status) == FW_OK && status.limit == 1 && !status.has_key_limit);
  CHECK(fw_check(limited, &own, &d) == FW_OK && !d.allowed && d.limit == 1);
  CHECK(fw_set_key_limit(limited, &alice, 0, 60000) == FW_INVALID_CONFIG);
  CHECK(fw_set_key_limit(limited, &alice, 3, 0) == FW_INVALID_CONFIG);
  CHECK(fw_set_key_limit(limited, NULL, 3, 60000) == FW_NULL_ARGUMENT);
  CHECK(fw_clear_key_limit(NULL, &alice) == FW_NULL_ARGUMENT);
  CHECK(fw_set_key_limit(limited, &unknown, 3, 60000) == FW_UNKNOWN_RULE);
  /* At an explicit time (now_ms above 0): the lifetime counts from it. */
  fw_key bob_at = {"u", "bob", NULL, 1000};
  CHECK(fw_set_key_limit(limited, &bob_at, 4, 5000) == FW_OK);
  bob_at.now_ms = 2000;
  CHECK(fw_inspect(limited, &bob_at, &status) == FW_OK && status.limit == 4 && status.key_limit_for_ms == 4000);
  bob_at.now_ms = 6000;
  CHECK(fw_inspect(limited, &bob_at, &status) == FW_OK && status.limit == 1 && !status.has_key_limit);
  fw_engine_free(limited);
  /* Hot reload: a changed limit restarts its rule, an invalid configuration changes nothing. */
  fw_engine *reloading = NULL;
  CHECK(fw_engine_from_toml("[[rules]]\nname = \"r\"\nkey = \"subject\"\nalgorithm = \"fixed_window\"\n"
                            "limit = 1\nwindow = \"1h\"", &reloading) == FW_OK);
  CHECK(fw_check(reloading, &req, &d) == FW_OK && d.allowed);
  CHECK(fw_check(reloading, &req, &d) == FW_OK && !d.allowed);
  char *summary = NULL;
  size_t summary_len = 0;
  CHECK(fw_engine_reload(reloading, "{\"rules\": [{\"name\": \"r\", \"key\": \"subject\", \"algorithm\": \"fixed_window\", "
                         "\"limit\": 3, \"window\": \"1h\"}, {\"name\": \"g\", \"key\": \"global\", "
                         "\"algorithm\": \"fixed_window\", \"limit\": 9, \"window\": \"1m\"}]}",
                         "json", &summary, &summary_len) == FW_OK);
  CHECK(summary != NULL && strlen(summary) == summary_len);
  CHECK(summary != NULL && strstr(summary, "{\"change\":\"restarted\",\"name\":\"r\"}") != NULL);
  CHECK(summary != NULL && strstr(summary, "{\"change\":\"added\",\"name\":\"g\"}") != NULL);
  fw_string_free(summary);
  CHECK(fw_check(reloading, &req, &d) == FW_OK && d.allowed && d.limit == 3 && d.remaining == 2);
  CHECK(fw_engine_rule_name(reloading, 1, buf, sizeof buf, &n) == FW_OK && strcmp(buf, "g") == 0);
  summary = NULL;
  CHECK(fw_engine_reload(reloading, "[[rules]]\nname = \"r\"\nkey = \"subject\"\nalgorithm = \"fixed_window\"\n"
                         "limit = 0\nwindow = \"1h\"", "toml", &summary, NULL) == FW_INVALID_CONFIG && summary == NULL);
  CHECK(fw_last_error_message(buf, sizeof buf, &n) == FW_OK && strstr(buf, "rules[0].limit") != NULL);
  CHECK(fw_check(reloading, &req, &d) == FW_OK && d.allowed && d.remaining == 1);
  CHECK(fw_engine_reload(reloading, "/nonexistent/floodwall.toml", "file", &summary, NULL) == FW_INVALID_CONFIG);
  CHECK(fw_engine_reload(reloading, "{}", "yaml", &summary, NULL) == FW_INVALID_ARGUMENT);
  CHECK(fw_last_error_message(buf, sizeof buf, &n) == FW_OK && strstr(buf, "yaml") != NULL);
  CHECK(fw_engine_reload(reloading, NULL, "json", &summary, NULL) == FW_NULL_ARGUMENT);
  CHECK(fw_engine_reload(reloading, "{}", "json", NULL, NULL) == FW_NULL_ARGUMENT);
  CHECK(fw_engine_reload(NULL, "{}", "json", &summary, NULL) == FW_NULL_ARGUMENT);
  fw_engine_free(reloading);
  /* A permit never released is freed with its engine. */
  fw_engine_free(inflight);
  /* Headers, for a rule keyed on one. */
  fw_engine *keyed = NULL;
  CHECK(fw_engine_from_toml("[[rules]]\nname = \"k\"\nkey = \"header:X-Api-Key\"\nalgorithm = \"fixed_window\"\n"
                            "limit = 1\nwindow = \"1m\"", &keyed) == FW_OK);
  fw_header key_a = {"x-api-key", "a"}, key_b = {"X-API-KEY", "b"};
  fw_request with_key = req;
  with_key.headers = &key_a;
  with_key.headers_len = 1;
  CHECK(fw_check(keyed, &with_key, &d) == FW_OK && d.allowed);
  CHECK(fw_check(keyed, &with_key, &d) == FW_OK && !d.allowed);
  with_key.headers = &key_b;
  CHECK(fw_check(keyed, &with_key, &d) == FW_OK && d.allowed);
  with_key.headers = NULL;
  CHECK(fw_check(keyed, &with_key, &d) == FW_NULL_ARGUMENT);
  fw_header bad_line = {"x-api-key", NULL};
  with_key.headers = &bad_line;
  CHECK(fw_check(keyed, &with_key, &d) == FW_NULL_ARGUMENT);
  CHECK(fw_last_error_message(buf, sizeof buf, &n) == FW_OK && strstr(buf, "request.headers[0].value") != NULL);
  fw_engine_free(keyed);
  fw_request bad = req;
  bad.path = NULL;
  CHECK(fw_check(engine, &bad, &d) == FW_NULL_ARGUMENT);
  bad = req;
  bad.subject = "\xc3\x28";
  CHECK(fw_check(engine, &bad, &d) == FW_INVALID_UTF8);
  bad = req;
  bad.cost = 3;
  CHECK(fw_check(engine, &bad, &d) == FW_COST_EXCEEDS_LIMIT);
  CHECK(fw_check(engine, NULL, &d) == FW_NULL_ARGUMENT);
  CHECK(fw_check(engine, &req, NULL) == FW_NULL_ARGUMENT);

  /* Headers of a denial. */
  fw_headers *headers = NULL;
  CHECK(fw_check_with_headers(engine, &req, &d, &headers) == FW_OK && !d.allowed);
  size_t count = 0;
  CHECK(fw_headers_len(headers, &count) == FW_OK && count > 0);
  int saw_retry = 0;
  for (size_t i = 0; i < count; i++) {
    const char *name = NULL, *value = NULL;
    CHECK(fw_headers_get(headers, i, &name, &value) == FW_OK);
    if (strcmp(name, "Retry-After") == 0 && strcmp(value, "60") == 0) saw_retry = 1;
  }
  CHECK(saw_retry);
  const char *name = NULL, *value = NULL;
  CHECK(fw_headers_get(headers, count, &name, &value) == FW_INVALID_ARGUMENT);
  CHECK(fw_headers_len(NULL, &count) == FW_NULL_ARGUMENT);
  CHECK(fw_headers_len(headers, NULL) == FW_NULL_ARGUMENT);
  fw_headers_free(headers);
  fw_headers_free(NULL);

  /* A batch: one fine, one with a cost over the limit. */
  fw_request batch[2] = {{"GET", "/", "bob", NULL, NULL, 1, 60000, NULL, 0}, {"GET", "/", "bob", NULL, NULL, 9, 60000, NULL, 0}};
  fw_decision out[2];
  fw_result results[2];
  CHECK(fw_check_many(engine, batch, 2, out, results) == FW_OK);
  CHECK(results[0] == FW_OK && out[0].allowed && results[1] == FW_COST_EXCEEDS_LIMIT);
  CHECK(fw_check_many(engine, NULL, 0, NULL, NULL) == FW_OK);
  CHECK(fw_check_many(engine, NULL, 2, out, results) == FW_NULL_ARGUMENT);

  /* Authentication: a forged token is refused with its kind and challenge. */
  fw_identity *identity = NULL;
  CHECK(fw_authenticate(engine, FORGED, &identity) == FW_BAD_SIGNATURE && identity == NULL);
  CHECK(fw_last_error_www_authenticate(buf, sizeof buf, &n) == FW_OK);
  CHECK(strstr(buf, "error=\"invalid_token\"") != NULL);
  CHECK(fw_authenticate(engine, "", &identity) == FW_MISSING_TOKEN);
  CHECK(fw_authenticate(engine, "Bearer x.y", &identity) == FW_MALFORMED_TOKEN);
  CHECK(fw_authenticate(engine, NULL, &identity) == FW_NULL_ARGUMENT);
  CHECK(fw_authorize(engine, FORGED, &req, &identity, &d) == FW_BAD_SIGNATURE);
  const char *text = NULL;
  CHECK(fw_identity_subject(NULL, &text) == FW_NULL_ARGUMENT && fw_identity_role(NULL, &text) == FW_NULL_ARGUMENT);
  CHECK(fw_identity_claims_json(NULL, buf, sizeof buf, &n) == FW_NULL_ARGUMENT);
  fw_identity_free(NULL);

  /* A valid token goes all the way through. */
  const char *valid = TOKEN;
  {
    CHECK(fw_authenticate(engine, valid, &identity) == FW_OK && identity != NULL);
    CHECK(fw_identity_subject(identity, &text) == FW_OK && strcmp(text, "carol") == 0);
    CHECK(fw_identity_role(identity, &text) == FW_OK && strcmp(text, "premium") == 0);
    CHECK(fw_identity_subject(identity, NULL) == FW_NULL_ARGUMENT);
    CHECK(fw_identity_claims_json(identity, buf, sizeof buf, &n) == FW_OK && strstr(buf, "\"sub\":\"carol\"") != NULL);
    fw_identity_free(identity);
    identity = NULL;
    CHECK(fw_authorize(engine, valid, &req, &identity, &d) == FW_OK && d.allowed && d.remaining == 4);
    fw_identity_free(identity);
  }

  /* Upstreams. */
  fw_lease *lease = NULL;
  CHECK(fw_pick(engine, "api", &lease) == FW_OK && lease != NULL);
  CHECK(fw_lease_upstream(lease, &text) == FW_OK && strcmp(text, "a") == 0);
  CHECK(fw_lease_url(lease, &text) == FW_OK && strcmp(text, "http://127.0.0.1:9001") == 0);
  CHECK(fw_lease_finish(lease, FW_OUTCOME_SUCCESS, 1500) == FW_OK);
  CHECK(fw_pick(engine, "api", &lease) == FW_OK);
  fw_lease_free(lease); /* counted as a failure */
  CHECK(fw_pick(engine, "api", &lease) == FW_OK);
  CHECK(fw_lease_finish(lease, 77, 0) == FW_INVALID_ARGUMENT); /* still consumed */
  CHECK(fw_pick(engine, "nope", &lease) == FW_UNKNOWN_SERVICE);
  CHECK(fw_upstreams_json(engine, "api", buf, sizeof buf, &n) == FW_OK);
  CHECK(strstr(buf, "\"name\":\"a\"") != NULL && strstr(buf, "\"state\":\"closed\"") != NULL);
  CHECK(strstr(buf, "\"calls\":2") != NULL);
  CHECK(fw_upstreams_json(engine, "api", buf, 8, &n) == FW_BUFFER_TOO_SMALL && n > 8);
  CHECK(fw_upstreams_json(engine, "nope", buf, sizeof buf, &n) == FW_UNKNOWN_SERVICE);
  CHECK(fw_lease_finish(NULL, FW_OUTCOME_SUCCESS, 0) == FW_NULL_ARGUMENT);
  CHECK(fw_lease_upstream(NULL, &text) == FW_NULL_ARGUMENT && fw_lease_url(NULL, &text) == FW_NULL_ARGUMENT);
  fw_lease_free(NULL);

  fw_engine_free(engine);

  /* Monitoring, on an engine of its own so that every count is known. The checks are dated
   * 2100-01-01 00:00 (a minute's start); the refusal, the upstream call and the responses
   * happen at the engine's clock, over an hour earlier: they count in the totals, not in the
   * series of the report dated 2100. */
  fw_engine *watched = NULL;
  CHECK(fw_engine_from_toml(CONFIG, &watched) == FW_OK);
  fw_request dated = {"get", "/api/orders?page=2", "alice", "free", NULL, 1, 4102444800000, NULL, 0};
  for (int i = 0; i < 3; i++) CHECK(fw_check(watched, &dated, &d) == FW_OK && d.allowed == (i < 2));
  CHECK(fw_authenticate(watched, FORGED, &identity) == FW_BAD_SIGNATURE);
  CHECK(fw_pick(watched, "api", &lease) == FW_OK);
  CHECK(fw_lease_finish(lease, FW_OUTCOME_FAILURE, 2000) == FW_OK);
  CHECK(fw_record_response(watched, "GET", "/api/orders?page=2", 200, 1500) == FW_OK);
  CHECK(fw_record_response(watched, "GET", "/api/orders", 429, 300) == FW_OK);
  CHECK(fw_record_response(watched, "POST", "/api/orders", 503, 2500000) == FW_OK);
  /* Bad responses are refused and not counted. */
  CHECK(fw_record_response(watched, "GET", "/", 42, 0) == FW_INVALID_ARGUMENT);
  last_message(buf, sizeof buf);
  CHECK(strstr(buf, "status 42") != NULL);
  CHECK(fw_record_response(watched, "GET", "/", 1000, 0) == FW_INVALID_ARGUMENT);
  CHECK(fw_record_response(watched, "GET", "/", 65536 + 200, 0) == FW_INVALID_ARGUMENT);
  CHECK(fw_record_response(watched, NULL, "/", 200, 0) == FW_NULL_ARGUMENT);
  CHECK(fw_record_response(watched, "GET", NULL, 200, 0) == FW_NULL_ARGUMENT);
  CHECK(fw_record_response(watched, "GET", "/\xff", 200, 0) == FW_INVALID_UTF8);
  CHECK(fw_record_response(NULL, "GET", "/", 200, 0) == FW_NULL_ARGUMENT);

  char *json = NULL;
  size_t json_len = 0;
  CHECK(fw_report_json(watched, 4102444800000 + 30000, &json, &json_len) == FW_OK && json != NULL);
  if (json != NULL) {
    CHECK(strlen(json) == json_len);
    CHECK(strstr(json, "\"generated_at_ms\":4102444830000,") != NULL);
    CHECK(strstr(json, "\"source\":\"memory\",\"store_kind\":\"memory\",\"store_failure\":null") != NULL);
    CHECK(strstr(json, "\"per_minute\":[{\"start_ms\":4102444800000,\"requests\":3,\"admitted\":2,\"rate_limited\":1,\"auth_rejected\":0,") != NULL);
    CHECK(strstr(json, "\"totals\":{\"start_ms\":0,\"requests\":4,\"admitted\":2,\"rate_limited\":1,\"auth_rejected\":1,\"failed\":0,"
                       "\"denied\":0,\"shadow_limited\":0,\"allowlisted\":0,\"blocked\":0,\"upstream_calls\":1,\"upstream_failures\":1,\"breaker_trips\":0,\"responses\":3,\"client_errors\":1,\"server_errors\":1,") != NULL);
    CHECK(strstr(json, "\"max_latency_us\":2500000") != NULL);
    CHECK(strstr(json, "\"top_endpoints\":[{\"key\":\"GET /api/orders\",\"count\":3,\"error\":0}]") != NULL);
    CHECK(strstr(json, "\"breaches_by_subject\":[{\"key\":\"alice\",\"count\":1,\"error\":0}]") != NULL);
    CHECK(strstr(json, "\"breaches_by_rule\":[{\"key\":\"per-user\",\"count\":1,\"error\":0}]") != NULL);
    CHECK(strstr(json, "\"auth_rejections\":{\"bad_signature\":1}") != NULL);
    CHECK(strstr(json, "\"upstream_failures\":[{\"key\":\"api/a\",\"count\":1,\"error\":0}]") != NULL);
    CHECK(strstr(json, "\"status_classes\":{\"2xx\":1,\"4xx\":1,\"5xx\":1}") != NULL);
    CHECK(strstr(json, "\"sink\":null") != NULL);
  }
  fw_string_free(json);
  /* At the engine's clock; the length is optional. */
  json = NULL;
  CHECK(fw_report_json(watched, -1, &json, NULL) == FW_OK && json != NULL && strstr(json, "\"responses\":3") != NULL);
  fw_string_free(json);
  fw_string_free(NULL);
  /* Out-pointers are written only on success. */
  json = NULL;
  json_len = 7;
  CHECK(fw_report_json(NULL, -1, &json, &json_len) == FW_NULL_ARGUMENT && json == NULL && json_len == 7);
  CHECK(fw_report_json(watched, -1, NULL, &json_len) == FW_NULL_ARGUMENT && json_len == 7);

  char *metrics = NULL;
  size_t metrics_len = 0;
  CHECK(fw_prometheus(watched, &metrics, &metrics_len) == FW_OK && metrics != NULL);
  if (metrics != NULL) {
    CHECK(strlen(metrics) == metrics_len);
    CHECK(strstr(metrics, "# TYPE floodwall_decisions_total counter\n") != NULL);
    CHECK(strstr(metrics, "\nfloodwall_decisions_total{outcome=\"admitted\"} 2\n") != NULL);
    CHECK(strstr(metrics, "\nfloodwall_decisions_total{outcome=\"rate_limited\"} 1\n") != NULL);
    CHECK(strstr(metrics, "\nfloodwall_auth_rejections_total{reason=\"bad_signature\"} 1\n") != NULL);
    CHECK(strstr(metrics, "\nfloodwall_responses_total{class=\"5xx\"} 1\n") != NULL);
    CHECK(strstr(metrics, "\nfloodwall_response_duration_seconds_count 3\n") != NULL);
    CHECK(strstr(metrics, "\nfloodwall_response_duration_seconds_bucket{le=\"+Inf\"} 3\n") != NULL);
    CHECK(strstr(metrics, "\nfloodwall_upstream_calls_total{service=\"api\",upstream=\"a\",outcome=\"failure\"} 1\n") != NULL);
  }
  fw_string_free(metrics);
  metrics = NULL;
  CHECK(fw_prometheus(NULL, &metrics, &metrics_len) == FW_NULL_ARGUMENT && metrics == NULL);
  CHECK(fw_prometheus(watched, NULL, NULL) == FW_NULL_ARGUMENT);
  /* The memory store is ok since the engine was built, for no reason to tell. */
  fw_store_health memory_health = {FW_STORE_FAILING, 0, "unset"};
  char unset[] = "unset";
  char *memory_reason = unset;
  CHECK(fw_engine_store_health(watched, &memory_health, &memory_reason) == FW_OK);
  CHECK(memory_health.state == FW_STORE_OK && memory_health.since_ms > 1600000000000ULL);
  CHECK(memory_health.reason_kind == NULL && memory_reason == NULL);
  fw_engine_free(watched);

  /* A shared store that cannot be reached, under on_error = "error": the failure, not a
   * decision (port 1 on the loopback refuses the connection at once). */
  fw_engine *unreachable = NULL;
  CHECK(fw_engine_from_toml("[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n"
                            "timeout = \"200ms\"\non_error = \"error\"\n"
                            "[[rules]]\nname = \"g\"\nkey = \"global\"\n"
                            "algorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1s\"\n",
                            &unreachable) == FW_OK);
  fw_request anyone = {"GET", "/", NULL, NULL, NULL, 1, -1, NULL, 0};
  fw_decision lost;
  CHECK(fw_check(unreachable, &anyone, &lost) == FW_STORE_FAILED);
  last_message(buf, sizeof buf);
  CHECK(strstr(buf, "unavailable") != NULL);
  /* Three failures open the store's breaker: failing, and why. */
  for (int i = 0; i < 2; i++) {
    CHECK(fw_check(unreachable, &anyone, &lost) == FW_STORE_FAILED);
  }
  fw_store_health health = {FW_STORE_OK, 0, NULL};
  char *reason = NULL;
  CHECK(fw_engine_store_health(unreachable, &health, &reason) == FW_OK);
  CHECK(health.state == FW_STORE_FAILING && health.since_ms > 1600000000000ULL);
  CHECK(health.reason_kind != NULL && strcmp(health.reason_kind, "refused") == 0);
  CHECK(reason != NULL && strstr(reason, "refused") != NULL);
  fw_string_free(reason);
  CHECK(fw_engine_store_health(unreachable, &health, NULL) == FW_OK && health.state == FW_STORE_FAILING);
  CHECK(fw_engine_store_health(unreachable, NULL, NULL) == FW_NULL_ARGUMENT);
  CHECK(fw_engine_store_health(NULL, &health, NULL) == FW_NULL_ARGUMENT);
  fw_engine_free(unreachable);

  http_layer();

  if (failures) {
    fprintf(stderr, "%d of %d checks failed\n", failures, checks);
    return 1;
  }
  printf("c ffi test: all %d checks passed\n", checks);
  return 0;
}
