package dev.omnisql;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** The sandbox GitHub's control routes: slow it down, and count the requests it receives. */
final class Sandbox {
  private static final String GITHUB = System.getProperty("omnisql.github.url");

  private Sandbox() {}

  static String github(String path, String body) throws Exception {
    HttpRequest.Builder r = HttpRequest.newBuilder(URI.create(GITHUB + path)).header("content-type", "application/json");
    r = body == null ? r.GET() : r.POST(HttpRequest.BodyPublishers.ofString(body));
    return HttpClient.newHttpClient().send(r.build(), HttpResponse.BodyHandlers.ofString()).body();
  }

  static long githubRequests() throws Exception {
    Matcher m = Pattern.compile("\"total\"\\s*:\\s*(\\d+)").matcher(github("/_sandbox/stats", null));
    assertTrue(m.find());
    return Long.parseLong(m.group(1));
  }

  /** GitHub answering each request after 1.5 s, its request count reset. */
  static void slowGithub() throws Exception {
    github("/_sandbox/settings", "{\"latency\": {\"fixed_ms\": 1500, \"jitter_pct\": 0}}");
    github("/_sandbox/stats/reset", "{}");
  }

  static void normalGithub() throws Exception {
    github("/_sandbox/settings", "{\"latency\": {\"fixed_ms\": 0, \"jitter_pct\": 0}}");
  }

  /** Waits until the running query has reached GitHub. */
  static void untilGithubAsked() throws Exception {
    long deadline = System.nanoTime() + 20_000_000_000L;
    while (githubRequests() == 0) {
      assertTrue(System.nanoTime() < deadline, "the query never reached GitHub");
      Thread.sleep(50);
    }
  }

  /** No more than what was in flight arrives in two latency periods after a cancel. */
  static void assertGithubStopped() throws Exception {
    long atCancel = githubRequests();
    Thread.sleep(3_500);
    long after = githubRequests();
    assertTrue(after - atCancel <= 16, atCancel + " then " + after);
  }
}
