/* Exercises every function of include/floodwall.h, error paths included. Built by
 * `make c-test` with -Wall -Werror and AddressSanitizer/UBSan, then run under valgrind. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "floodwall.h"

static int failures = 0;

#define CHECK(cond)                                                                   \
  do {                                                                                \
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
  fw_request req = {"GET", "/api/orders", "alice", "free", "192.0.2.1", 1, 60000};
  fw_decision d;
  memset(&d, 0, sizeof d);
  CHECK(fw_check(engine, &req, &d) == FW_OK && d.allowed && d.remaining == 1 && d.rule_index == 0);
  CHECK(d.store == FW_STORE_MEMORY && d.limit == 2);
  CHECK(fw_check(engine, &req, &d) == FW_OK && d.allowed && d.remaining == 0);
  CHECK(fw_check(engine, &req, &d) == FW_OK && !d.allowed && d.retry_after_ms == 60000);
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
  fw_request batch[2] = {{"GET", "/", "bob", NULL, NULL, 1, 60000}, {"GET", "/", "bob", NULL, NULL, 9, 60000}};
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
  fw_request dated = {"get", "/api/orders?page=2", "alice", "free", NULL, 1, 4102444800000};
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
                       "\"upstream_calls\":1,\"upstream_failures\":1,\"breaker_trips\":0,\"responses\":3,\"client_errors\":1,\"server_errors\":1,") != NULL);
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
  fw_engine_free(watched);

  /* A shared store that cannot be reached, under on_error = "error": the failure, not a
   * decision (port 1 on the loopback refuses the connection at once). */
  fw_engine *unreachable = NULL;
  CHECK(fw_engine_from_toml("[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n"
                            "timeout = \"200ms\"\non_error = \"error\"\n"
                            "[[rules]]\nname = \"g\"\nkey = \"global\"\n"
                            "algorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1s\"\n",
                            &unreachable) == FW_OK);
  fw_request anyone = {"GET", "/", NULL, NULL, NULL, 1, -1};
  fw_decision lost;
  CHECK(fw_check(unreachable, &anyone, &lost) == FW_STORE_FAILED);
  last_message(buf, sizeof buf);
  CHECK(strstr(buf, "unavailable") != NULL);
  fw_engine_free(unreachable);
  if (failures) {
    fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  printf("c ffi test: all checks passed\n");
  return 0;
}
