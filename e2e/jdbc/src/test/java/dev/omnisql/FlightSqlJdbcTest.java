package dev.omnisql;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;

/** The cells of the client matrix for JDBC: connect, query, parameters, metadata browsing, errors. */
class FlightSqlJdbcTest {
  /** `jdbc:arrow-flight-sql://host:port/?useEncryption=false`, from `omnisql dev`'s endpoint. */
  private static final String URL = System.getProperty("omnisql.jdbc.url");
  private static final String TOKEN = System.getProperty("omnisql.token");

  /** The same over TLS: trusting the private CA (`tlsRootCerts`), and with the system's roots only. */
  private static final String TLS_URL = System.getProperty("omnisql.jdbc.tls.url");
  private static final String UNTRUSTED_URL = System.getProperty("omnisql.jdbc.tls.untrusted.url");
  private static final String TLS_TOKEN = System.getProperty("omnisql.tls.token");

  private static Connection connect(String token) throws SQLException {
    return connect(URL, token);
  }

  private static Connection connect(String url, String token) throws SQLException {
    Properties p = new Properties();
    p.setProperty("token", token);
    return DriverManager.getConnection(url, p);
  }




  @Test
  void cancellingAStatementStopsItsQuery() throws Exception {
    Sandbox.slowGithub();
    try (Connection c = connect(TOKEN); Statement s = c.createStatement()) {
      AtomicReference<Throwable> failure = new AtomicReference<>();
      Thread worker = new Thread(() -> {
        // Fresh data only: a cached answer would never reach GitHub.
        try (ResultSet rs = s.executeQuery("SET omnisql.max_staleness = '0'; SELECT login, email FROM github.users")) {
          while (rs.next()) {
            // draining
          }
        } catch (Throwable t) {
          failure.set(t);
        }
      });
      worker.start();
      Sandbox.untilGithubAsked();
      long started = System.nanoTime();
      s.cancel();
      worker.join(10_000);
      assertFalse(worker.isAlive(), "the cancelled query did not return");
      assertTrue(System.nanoTime() - started < 5_000_000_000L, "cancelling took over 5 s");
      assertTrue(failure.get() != null, "the cancelled query should fail, not return rows");
      StringBuilder causes = new StringBuilder();
      for (Throwable t = failure.get(); t != null; t = t.getCause()) {
        causes.append(t).append('\n');
      }
      assertTrue(causes.toString().toLowerCase().contains("cancel"), causes.toString());
      Sandbox.assertGithubStopped();
    } finally {
      Sandbox.normalGithub();
    }
  }

  @Test
  void overTlsTheServersCertificateIsChecked() throws SQLException {
    try (Connection c = connect(TLS_URL, TLS_TOKEN);
        Statement s = c.createStatement();
        ResultSet rs = s.executeQuery("SELECT name FROM slack.channels WHERE name = 'general'")) {
      assertTrue(rs.next());
      assertEquals("general", rs.getString(1));
    }
    SQLException untrusted =
        assertThrows(SQLException.class, () -> connect(UNTRUSTED_URL, TLS_TOKEN).createStatement().executeQuery("SELECT 1"));
    StringBuilder causes = new StringBuilder();
    for (Throwable t = untrusted; t != null; t = t.getCause()) {
      causes.append(t).append('\n');
    }
    assertTrue(causes.toString().contains("PKIX") || causes.toString().contains("certificate"), causes.toString());
  }

  private static List<Long> numbers(ResultSet rs) throws SQLException {
    List<Long> out = new ArrayList<>();
    while (rs.next()) {
      out.add(rs.getLong(1));
    }
    return out;
  }

  @Test
  void aQueryAnswersWithTheRowsAndTypesOfTheApp() throws SQLException {
    try (Connection c = connect(TOKEN);
        Statement s = c.createStatement();
        ResultSet rs = s.executeQuery(
            "SELECT number, title, created_at FROM github.issues WHERE repo_full_name = 'acme/api' ORDER BY number")) {
      int rows = 0;
      while (rs.next()) {
        assertTrue(rs.getLong("number") > 0);
        assertFalse(rs.getString("title").isEmpty());
        assertTrue(rs.getTimestamp("created_at") != null);
        rows++;
      }
      assertTrue(rows > 5, rows + " rows");
    }
  }

  @Test
  void questionMarkParametersBindLikeLiterals() throws SQLException {
    try (Connection c = connect(TOKEN)) {
      List<Long> literal;
      try (Statement s = c.createStatement();
          ResultSet rs = s.executeQuery(
              "SELECT number FROM github.issues WHERE state = 'open' AND repo_full_name = 'acme/web' ORDER BY number")) {
        literal = numbers(rs);
      }
      assertFalse(literal.isEmpty());
      try (PreparedStatement p = c.prepareStatement(
          "SELECT number FROM github.issues WHERE state = ? AND repo_full_name = ? ORDER BY number")) {
        p.setString(1, "open");
        p.setString(2, "acme/web");
        try (ResultSet rs = p.executeQuery()) {
          assertEquals(literal, numbers(rs));
        }
        // The same statement, other values.
        p.setString(1, "closed");
        try (ResultSet rs = p.executeQuery()) {
          List<Long> closed = numbers(rs);
          assertFalse(closed.isEmpty());
          assertTrue(closed.stream().noneMatch(literal::contains));
        }
      }
    }
  }

  @Test
  void metadataBrowsingListsSchemasTablesColumnsAndTypes() throws SQLException {
    try (Connection c = connect(TOKEN)) {
      DatabaseMetaData md = c.getMetaData();
      Set<String> schemas = new HashSet<>();
      try (ResultSet rs = md.getSchemas()) {
        while (rs.next()) {
          schemas.add(rs.getString("TABLE_SCHEM"));
        }
      }
      assertTrue(schemas.containsAll(Set.of("github", "salesforce", "slack")), schemas.toString());
      Set<String> tables = new HashSet<>();
      try (ResultSet rs = md.getTables(null, "salesforce", "%", null)) {
        while (rs.next()) {
          tables.add(rs.getString("TABLE_NAME"));
        }
      }
      assertTrue(tables.containsAll(Set.of("account", "contact", "opportunity")), tables.toString());
      Set<String> columns = new HashSet<>();
      try (ResultSet rs = md.getColumns(null, "salesforce", "account", "%")) {
        while (rs.next()) {
          columns.add(rs.getString("COLUMN_NAME"));
        }
      }
      assertTrue(columns.containsAll(Set.of("id", "name", "annual_revenue")), columns.toString());
      try (ResultSet rs = md.getPrimaryKeys(null, "salesforce", "account")) {
        assertFalse(rs.next(), "SaaS tables declare no keys");
      }
      try (ResultSet rs = md.getImportedKeys(null, "github", "issues")) {
        assertFalse(rs.next(), "nor foreign keys");
      }
      // (This driver answers getTypeInfo() itself, without asking the server: nothing to check here.)
    }
  }

  @Test
  void errorsSayWhatWentWrong() throws SQLException {
    try (Connection c = connect(TOKEN); Statement s = c.createStatement()) {
      SQLException e = assertThrows(SQLException.class, () -> s.executeQuery("SELECT * FROM github.nope"));
      assertTrue(String.valueOf(e.getMessage()).contains("github.nope"), e.getMessage());
      SQLException write = assertThrows(SQLException.class, () -> s.executeUpdate("DELETE FROM github.issues"));
      assertTrue(String.valueOf(write.getMessage()).contains("read-only"), write.getMessage());
    }
    assertThrows(SQLException.class, () -> connect("not-a-key").createStatement().executeQuery("SELECT 1"));
  }
}
