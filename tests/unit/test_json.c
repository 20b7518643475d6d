/*
 * test_json.c - the order/number-preserving JSON module: parsing (escapes,
 * surrogates, limits, errors), Python json.dumps-compatible writing (float
 * repr, separators, ensure_ascii both ways, duplicate keys) and compact
 * round trips.
 */
#include <stdlib.h>
#include <string.h>

#include "json/json.h"
#include "../test.h"

static char *py(const char *in, unsigned flags) {
    v4f_json_doc *d = NULL;
    v4f_err err = {0};
    if (v4f_json_parse(in, strlen(in), NULL, &d, &err) != V4F_OK) return NULL;
    v4f_json_buf b;
    v4f_json_buf_init(&b);
    v4f_json_write(&b, v4f_json_doc_root(d), flags);
    v4f_json_doc_free(d);
    return v4f_json_buf_take(&b, NULL);
}

#define CHECK_PY(in, want, flags)                  \
    do {                                           \
        char *o_ = py(in, flags);                  \
        CHECK_STR(o_, want);                       \
        free(o_);                                  \
    } while (0)

TEST(json_python_numbers) {
    /* expected values from CPython 3.11 json.dumps(json.loads(s)) */
    static const char *cases[][2] = {
        {"0.5", "0.5"}, {"1e5", "100000.0"}, {"1E-5", "1e-05"},
        {"123456789012345678.0", "1.2345678901234568e+17"}, {"1e16", "1e+16"},
        {"1e15", "1000000000000000.0"}, {"0.0001", "0.0001"}, {"0.00001", "1e-05"},
        {"-0.0", "-0.0"}, {"2.50", "2.5"}, {"1e400", "Infinity"}, {"-1e400", "-Infinity"},
        {"3.14159265358979323846", "3.141592653589793"}, {"5e-324", "5e-324"},
        {"1.7976931348623157e308", "1.7976931348623157e+308"}, {"100", "100"}, {"-0", "0"},
        {"12345678901234567890123", "12345678901234567890123"}, {"0.1", "0.1"},
        {"1e22", "1e+22"}, {"123e-2", "1.23"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) CHECK_PY(cases[i][0], cases[i][1], V4F_JSON_WRITE_PY);
    /* compact mode keeps the source text */
    CHECK_PY("[1E5, -0, 2.50]", "[1E5,-0,2.50]", 0);
}

TEST(json_python_strings_and_layout) {
    CHECK_PY("{\"b\": [1, {\"c\": null}], \"a\": true, \"é\": \"😀\"}",
             "{\"b\": [1, {\"c\": null}], \"a\": true, \"é\": \"😀\"}", V4F_JSON_WRITE_PY);
    CHECK_PY("\"a\\\"\\\\\\n\\r\\t\\b\\f\\u0001\\u001f\\u007f\\u2028é\\ud83d\\ude00\"",
             "\"a\\\"\\\\\\n\\r\\t\\b\\f\\u0001\\u001f\x7f\xe2\x80\xa8é😀\"", V4F_JSON_WRITE_PY);
    CHECK_PY("\"é😀\\u007f\"", "\"\\u00e9\\ud83d\\ude00\\u007f\"", V4F_JSON_WRITE_PY | V4F_JSON_WRITE_ASCII);
    /* lone surrogates become U+FFFD; "\/" decodes to "/" */
    CHECK_PY("\"\\ud800x\\udc00\\/\"", "\"\xef\xbf\xbdx\xef\xbf\xbd/\"", V4F_JSON_WRITE_PY);
    /* duplicate keys: Python dict semantics in PY mode, all kept otherwise */
    CHECK_PY("{\"a\":1,\"b\":2,\"a\":3}", "{\"a\": 3, \"b\": 2}", V4F_JSON_WRITE_PY);
    CHECK_PY("{\"a\":1,\"b\":2,\"a\":3}", "{\"a\":1,\"b\":2,\"a\":3}", 0);
    CHECK_PY(" [ ] ", "[]", V4F_JSON_WRITE_PY);
    CHECK_PY("{}", "{}", V4F_JSON_WRITE_PY);
}

TEST(json_accessors) {
    const char *s = "{\"k\": \"v\", \"n\": 0, \"arr\": [1, 2, 3], \"k\": \"w\", \"e\": \"\"}";
    v4f_json_doc *d = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_json_parse(s, strlen(s), NULL, &d, &err) == V4F_OK);
    const v4f_json *r = v4f_json_doc_root(d);
    size_t l;
    CHECK_STR(v4f_json_get_str(r, "k", &l), "w"); /* last duplicate wins */
    CHECK(!v4f_json_truthy(v4f_json_get(r, "n")));
    CHECK(!v4f_json_truthy(v4f_json_get(r, "e")));
    CHECK(!v4f_json_truthy(v4f_json_get(r, "missing")));
    CHECK(v4f_json_truthy(v4f_json_get(r, "arr")));
    CHECK_EQ_INT(v4f_json_get(r, "arr")->n, 3);
    CHECK(v4f_json_at(v4f_json_get(r, "arr"), 2)->str[0] == '3');
    CHECK(v4f_json_at(v4f_json_get(r, "arr"), 3) == NULL);
    CHECK(v4f_json_get(NULL, "x") == NULL);
    v4f_json_doc_free(d);
    /* embedded NUL survives */
    REQUIRE(v4f_json_parse("\"a\\u0000b\"", 10, NULL, &d, &err) == V4F_OK);
    CHECK_EQ_INT(v4f_json_doc_root(d)->len, 3);
    v4f_json_doc_free(d);
}

TEST(json_rejects_bad_input) {
    static const char *bad[] = {
        "", " ", "[", "]", "{", "{\"a\"}", "{\"a\":}", "{a:1}", "[1,]", "{\"a\":1,}", "01", "1.",
        ".5", "-", "1e", "1e+", "+1", "NaN", "Infinity", "tru", "nul", "\"abc", "\"\\x\"", "\"\\u12\"",
        "\"\x01\"", "\"\xff\"", "\"\xc3\x28\"", "\"\xed\xa0\x80\"", "[1] 2", "[1}", "{\"a\" 1}",
        "\"\\",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v4f_json_doc *d = (v4f_json_doc *)1;
        v4f_err err = {0};
        v4f_status st = v4f_json_parse(bad[i], strlen(bad[i]), NULL, &d, &err);
        CHECK_MSG(st == V4F_STATUS_FORMAT, "accepted bad input #%zu '%s'", i, bad[i]);
        CHECK(d == NULL);
        CHECK(err.msg[0] != '\0');
    }
}

TEST(json_limits) {
    /* depth */
    char deep[2100];
    for (int i = 0; i < 1000; i++) deep[i] = '[';
    for (int i = 0; i < 1000; i++) deep[1000 + i] = ']';
    v4f_json_doc *d = NULL;
    v4f_err err = {0};
    CHECK_STATUS(v4f_json_parse(deep, 2000, NULL, &d, &err), V4F_STATUS_FORMAT);
    v4f_json_limits lim = {.max_depth = 2000};
    CHECK_STATUS(v4f_json_parse(deep, 2000, &lim, &d, &err), V4F_OK);
    v4f_json_doc_free(d);
    lim = (v4f_json_limits){.max_bytes = 10};
    CHECK_STATUS(v4f_json_parse("[1,2,3,4,5,6]", 13, &lim, &d, &err), V4F_STATUS_RANGE);
    /* many members (exercises arena growth) and a large object in PY mode */
    v4f_json_buf b;
    v4f_json_buf_init(&b);
    v4f_json_buf_putc(&b, '{');
    for (int i = 0; i < 5000; i++) {
        char k[32];
        snprintf(k, sizeof k, "%s\"k%d\":%d", i ? "," : "", i, i);
        v4f_json_buf_puts(&b, k);
    }
    v4f_json_buf_putc(&b, '}');
    REQUIRE(v4f_json_parse(b.data, b.len, NULL, &d, &err) == V4F_OK);
    CHECK_EQ_INT(v4f_json_doc_root(d)->n, 5000);
    v4f_json_buf o;
    v4f_json_buf_init(&o);
    v4f_json_write(&o, v4f_json_doc_root(d), 0);
    CHECK(o.len == b.len && memcmp(o.data, b.data, b.len) == 0);
    v4f_json_buf_free(&o);
    v4f_json_buf_free(&b);
    v4f_json_doc_free(d);
}
