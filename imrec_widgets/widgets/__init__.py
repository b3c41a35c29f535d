from .search_widget import SearchWidget as SearchWidget
