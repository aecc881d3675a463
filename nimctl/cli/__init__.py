"""The Typer command line. Commands are thin: parse, call the library, print through nimctl.output."""
