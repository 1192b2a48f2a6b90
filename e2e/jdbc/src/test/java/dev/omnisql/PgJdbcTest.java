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

/**
 * The cells of the client matrix for the PostgreSQL JDBC driver (pgJDBC, what DBeaver, Metabase and most
 * Java tools use) over OmniSQL's Postgres wire protocol: connect, query, parameters, metadata, cancel, TLS.
 */
class PgJdbcTest {
  /** `jdbc:postgresql://host:port/omnisql?sslmode=disable`, from `omnisql dev`'s endpoint. */
  private static final String URL = System.getProperty("omnisql.pg.url");
  private static final String TOKEN = System.getProperty("omnisql.token");
  /** The same over TLS, verifying the server against the private CA; and trusting nothing but the JDK's roots. */
  private static final String TLS_URL = System.getProperty("omnisql.pg.tls.url");
  private static final String UNTRUSTED_URL = System.getProperty("omnisql.pg.tls.untrusted.url");
  private static final String TLS_TOKEN = System.getProperty("omnisql.tls.token");

  private static Connection connect(String url, String token) throws SQLException {
    Properties p = new Properties();
    p.setProperty("user", "demo");
    p.setProperty("password", token);
    return DriverManager.getConnection(url, p);
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
    try (Connection c = connect(URL, TOKEN);
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
  void preparedStatementsBindTypedParametersOnTheServer() throws SQLException {
    try (Connection c = connect(URL, TOKEN)) {
      List<Long> literal;
      try (Statement s = c.createStatement();
          ResultSet rs = s.executeQuery(
              "SELECT number FROM github.issues WHERE state = 'open' AND repo_full_name = 'acme/web' AND number > 2 ORDER BY number")) {
        literal = numbers(rs);
      }
      assertFalse(literal.isEmpty());
      try (PreparedStatement p = c.prepareStatement(
          "SELECT number FROM github.issues WHERE state = ? AND repo_full_name = ? AND number > ? ORDER BY number")) {
        p.setString(1, "open");
        p.setString(2, "acme/web");
        p.setLong(3, 2);
        // pgJDBC switches to a named server-side statement from the fifth run: run it past that.
        for (int i = 0; i < 6; i++) {
          try (ResultSet rs = p.executeQuery()) {
            assertEquals(literal, numbers(rs));
          }
        }
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
  void metadataBrowsingListsSchemasTablesAndColumns() throws SQLException {
    try (Connection c = connect(URL, TOKEN)) {
      DatabaseMetaData md = c.getMetaData();
      assertEquals("PostgreSQL", md.getDatabaseProductName());
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
    }
  }

  @Test
  void cancellingAStatementStopsItsQuery() throws Exception {
    Sandbox.slowGithub();
    try (Connection c = connect(URL, TOKEN); Statement s = c.createStatement()) {
      s.execute("SET omnisql.max_staleness = '0'");
      AtomicReference<Throwable> failure = new AtomicReference<>();
      Thread worker = new Thread(() -> {
        try (ResultSet rs = s.executeQuery("SELECT login, email FROM github.users")) {
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
      assertTrue(failure.get() instanceof SQLException, String.valueOf(failure.get()));
      assertEquals("57014", ((SQLException) failure.get()).getSQLState(), failure.get().toString());
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
    SQLException untrusted = assertThrows(SQLException.class, () -> connect(UNTRUSTED_URL, TLS_TOKEN));
    StringBuilder causes = new StringBuilder();
    for (Throwable t = untrusted; t != null; t = t.getCause()) {
      causes.append(t).append('\n');
    }
    assertTrue(causes.toString().contains("PKIX") || causes.toString().contains("certificate"), causes.toString());
  }

  @Test
  void errorsCarryASqlState() throws SQLException {
    try (Connection c = connect(URL, TOKEN); Statement s = c.createStatement()) {
      SQLException e = assertThrows(SQLException.class, () -> s.executeQuery("SELECT * FROM github.nope"));
      assertTrue(String.valueOf(e.getMessage()).contains("github.nope"), e.getMessage());
      assertEquals("42000", e.getSQLState());
    }
    SQLException refused = assertThrows(SQLException.class, () -> connect(URL, "not-a-key"));
    assertEquals("28P01", refused.getSQLState());
  }
}
