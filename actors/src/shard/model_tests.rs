#[test] fn placeholder_until_model_tests_land() {}
